"""
Dataset replication: snapshots of a dataset, replication of a snapshot to
another dataset, and a dataset sent or received as a tar stream.

A dataset ``pool/name`` is the directory mounted at ``<root>/pool/name``
(``REPLICA_MOUNTPOINT_ROOT``, ``/mnt`` by default); its snapshots live in its
``.zfs/snapshot/<name>`` directory.
"""
import errno
import os
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone

from midjobs.errors import CallError, ValidationErrors
from midjobs.service import Service, job, private

CHUNK_SIZE = 1024 * 1024
MAX_STREAM_SIZE = 1024 * 1024 * 1024
SNAPSHOT_DIR = os.path.join('.zfs', 'snapshot')


def mountpoint_root():
    return os.environ.get('REPLICA_MOUNTPOINT_ROOT', '/mnt')


def dataset_lock(dataset):
    return f'replica_dataset:{dataset}'


def dataset_files(path):
    """
    Yield (relative path, size) of each file under `path`, snapshots left out, in a stable order.
    """
    for root, dirs, files in os.walk(path):
        if root == path and '.zfs' in dirs:
            dirs.remove('.zfs')
        dirs.sort()
        for name in sorted(files):
            full_path = os.path.join(root, name)
            yield os.path.relpath(full_path, path), os.path.getsize(full_path)


class ReplicaService(Service):

    class Config:
        namespace = 'replica'
        cli_namespace = 'storage.replica'

    @private
    def mountpoint(self, dataset):
        return os.path.join(mountpoint_root(), dataset)

    @private
    def validate_dataset_name(self, verrors, schema, dataset):
        if not isinstance(dataset, str) or not dataset:
            verrors.add(schema, 'A dataset name is required')
        elif dataset.startswith('/') or '..' in dataset.split('/') or '@' in dataset:
            verrors.add(schema, f'{dataset!r} is not a valid dataset name')

    def dataset_info(self, dataset):
        """
        Return the mountpoint, number of files, used bytes and snapshots of `dataset`.
        """
        verrors = ValidationErrors()
        self.validate_dataset_name(verrors, 'replica_dataset_info.dataset', dataset)
        verrors.check()

        path = self.mountpoint(dataset)
        if not os.path.isdir(path):
            raise CallError(f'Dataset {dataset!r} does not exist', errno.ENOENT)

        files = list(dataset_files(path))
        snapshots_path = os.path.join(path, SNAPSHOT_DIR)
        return {
            'name': dataset,
            'mountpoint': path,
            'files': len(files),
            'used': sum(size for relpath, size in files),
            'snapshots': sorted(os.listdir(snapshots_path)) if os.path.isdir(snapshots_path) else [],
        }

    @job(lock=lambda args: dataset_lock(args[0]))
    def snapshot(self, job, dataset, name=None):
        """
        Take the snapshot `name` (by default `auto-<UTC time>`) of `dataset` and return its name.
        """
        info = self.middleware.call_sync('replica.dataset_info', dataset)
        name = name or datetime.now(timezone.utc).strftime('auto-%Y%m%d-%H%M%S-%f')
        if '/' in name or name.startswith('.'):
            raise CallError(f'{name!r} is not a valid snapshot name', errno.EINVAL)

        path = os.path.join(info['mountpoint'], SNAPSHOT_DIR, name)
        if os.path.exists(path):
            raise CallError(f'Snapshot {dataset}@{name} already exists', errno.EEXIST)

        job.set_progress(0, f'Taking snapshot {dataset}@{name}')
        partial = f'{path}.partial'
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        for i, (relpath, size) in enumerate(dataset_files(info['mountpoint'])):
            os.makedirs(os.path.dirname(os.path.join(partial, relpath)), exist_ok=True)
            shutil.copy2(os.path.join(info['mountpoint'], relpath), os.path.join(partial, relpath))
            job.set_progress(100 * (i + 1) / info['files'], f'Snapshot of {relpath}')
        os.rename(partial, path)

        job.set_progress(100, f'Snapshot {dataset}@{name} taken')
        return name

    @job(
        lock=lambda args: dataset_lock(args[1]),
        logs=True,
        description=lambda source, target, *args: f'Replicating {source} to {target}',
    )
    async def run(self, job, source, target, options=None):
        """
        Replicate `source` to `target`: take a snapshot of `source` and make `target` hold exactly its files.

        `options.snapshot` names the snapshot (by default `auto-<UTC time>`). With `options.delete` false,
        files of `target` that the snapshot lacks are kept.
        """
        options = options or {}
        verrors = ValidationErrors()
        self.validate_dataset_name(verrors, 'replica_run.source', source)
        self.validate_dataset_name(verrors, 'replica_run.target', target)
        if source == target:
            verrors.add('replica_run.target', 'Source and target must be different datasets')
        verrors.check()

        snapshot = await job.wrap(await self.middleware.call('replica.snapshot', source, options.get('snapshot')))
        job.set_description(f'Replicating {source}@{snapshot} to {target}')

        result = await self.middleware.run_in_thread(
            self._copy_snapshot, job, source, snapshot, target, options.get('delete', True),
        )
        self.logger.info('Replicated %s@%s to %s: %d files', source, snapshot, target, result['files'])
        return result

    def _copy_snapshot(self, job, source, snapshot, target, delete):
        source_path = os.path.join(self.mountpoint(source), SNAPSHOT_DIR, snapshot)
        target_path = self.mountpoint(target)
        os.makedirs(target_path, exist_ok=True)

        files = list(dataset_files(source_path))
        total = sum(size for relpath, size in files) or 1
        copied = 0
        job.set_progress(0, f'Copying {len(files)} files')
        for relpath, size in files:
            os.makedirs(os.path.dirname(os.path.join(target_path, relpath)), exist_ok=True)
            shutil.copy2(os.path.join(source_path, relpath), os.path.join(target_path, relpath))
            copied += size
            job.logs_fd.write(f'copied {relpath} ({size} bytes)\n'.encode())
            job.set_progress(100 * copied / total, f'Copied {relpath}')

        deleted = 0
        if delete:
            keep = {relpath for relpath, size in files}
            for relpath, size in list(dataset_files(target_path)):
                if relpath not in keep:
                    os.unlink(os.path.join(target_path, relpath))
                    job.logs_fd.write(f'deleted {relpath}\n'.encode())
                    deleted += 1

        job.set_progress(100, f'{target} is at {source}@{snapshot}')
        return {'snapshot': snapshot, 'files': len(files), 'bytes': copied, 'deleted': deleted}

    @job(lock=lambda args: dataset_lock(args[0]), pipes=['output'], check_pipes=False)
    def send(self, job, dataset, options=None):
        """
        Send `dataset` as a tar stream: to the caller (use `core.download`), or with `options.path`
        to that file on this system.
        """
        options = options or {}
        info = self.middleware.call_sync('replica.dataset_info', dataset)
        job.set_progress(0, f'Sending {dataset}')
        if options.get('path'):
            with open(options['path'], 'wb') as f:
                sent = self._write_stream(job, info, f)
        else:
            job.check_pipe('output')
            sent = self._write_stream(job, info, job.pipes.output.w)
            job.pipes.output.w.close()

        return {'files': info['files'], 'bytes': sent}

    def _write_stream(self, job, info, f):
        sent = 0
        with tarfile.open(fileobj=f, mode='w|') as tar:
            for relpath, size in dataset_files(info['mountpoint']):
                tar.add(os.path.join(info['mountpoint'], relpath), arcname=relpath)
                sent += size
                job.set_progress(100 * sent / (info['used'] or 1), f'Sent {relpath}')
        return sent

    @job(lock=lambda args: dataset_lock(args[0]), pipes=['input'])
    def receive(self, job, dataset, options=None):
        """
        Receive a tar stream (as `replica.send` makes it), uploaded to this job, into `dataset`.

        `options.size`, the size of the stream, lets the job report its progress while it reads.
        """
        options = options or {}
        verrors = ValidationErrors()
        self.validate_dataset_name(verrors, 'replica_receive.dataset', dataset)
        verrors.check()

        job.set_progress(0, 'Reading the stream')
        with tempfile.TemporaryFile() as stream:
            while True:
                data = job.pipes.input.r.read(CHUNK_SIZE)
                if data == b'':
                    break
                stream.write(data)
                if stream.tell() > MAX_STREAM_SIZE:
                    raise CallError(f'The stream is larger than {MAX_STREAM_SIZE} bytes', errno.EFBIG)
                if options.get('size'):
                    job.set_progress(min(50, 50 * stream.tell() / options['size']), 'Reading the stream')

            stream.seek(0)
            job.set_progress(50, f'Extracting into {dataset}')
            path = self.mountpoint(dataset)
            try:
                with tarfile.open(fileobj=stream) as tar:
                    members = tar.getmembers()
                    os.makedirs(path, exist_ok=True)
                    for i, member in enumerate(members):
                        tar.extract(member, path, filter='data')
                        job.set_progress(50 + 50 * (i + 1) / len(members), f'Extracted {member.name}')
            except tarfile.TarError as e:
                raise CallError(f'Not a replication stream: {e}', errno.EINVAL)

        self.logger.info('Received %d files into %s', len(members), dataset)
        return self.middleware.call_sync('replica.dataset_info', dataset)
