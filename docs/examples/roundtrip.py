"""
Upload a file to the midjobs daemon, then download it again and compare.

    python roundtrip.py http://127.0.0.1:6000 admin s3cret backup.tar /srv/in/backup.tar

The daemon writes the upload with filesystem.put (the remote path must be
under one of its [filesystem] roots), then streams it back through
core.download and /_download.
"""

import hashlib
import sys
import tempfile

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from midjobs.client import connect, download, upload


def sha256(f):
    f.seek(0)
    return hashlib.file_digest(f, "sha256").hexdigest()


async def main(reactor, base_url, username, password, local_path, remote_path):
    ws_url = base_url.replace("http", "ws", 1) + "/api/current"
    client = await connect(ws_url, reactor=reactor)
    try:
        if not await client.login(username, password):
            raise SystemExit("Wrong user name or password")

        # Upload: the daemon streams the file into the job's input pipe;
        # wait=client follows the job over the WebSocket until it ends.
        with open(local_path, "rb") as f:
            written = await upload(
                base_url, "filesystem.put", [remote_path], [f],
                auth=(username, password), reactor=reactor, wait=client,
            )
        print(f"uploaded {written} bytes to {remote_path}")

        # Download: core.download starts filesystem.get with an output pipe
        # and answers with a one-time URL for it.
        job_id, url = await client.call("core.download", "filesystem.get", [remote_path], "copy.bin")
        with tempfile.TemporaryFile() as copy, open(local_path, "rb") as original:
            received = await download(base_url, url, copy, reactor=reactor)
            same = sha256(copy) == sha256(original)
        print(f"downloaded {received} bytes (job {job_id}); identical: {same}")
        if not same:
            raise SystemExit(1)
    finally:
        await client.close()


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:6])))
