"""
What the job layer needs from the sessions that call it, and what the RPC
layer needs from the cluster the daemon is a node of.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Attribute, Interface

__all__ = ["ICluster", "IConnectionSession", "ISession", "NODE_OFFLINE", "NODE_ONLINE"]


class ISession(Interface):
    """
    A caller: a WebSocket connection, or one HTTP request.

    Methods decorated with C{@pass_app} receive it.
    """

    user = Attribute(
        "The logged-in user (an L{midjobs.auth.IUser} avatar), or C{None} before login."
    )
    private_methods = Attribute("Whether the caller may see and call private methods (a bool).")
    peer = Attribute("The remote address, as C{twisted.internet.interfaces.IAddress}.")

    def login(user: object) -> None:
        """
        Make C{user} (an C{IUser} avatar the portal returned) the session's user.
        """

    def logout() -> None:
        """
        Forget the session's user.
        """


class IConnectionSession(ISession):
    """
    A session that lasts as long as its connection (a WebSocket): it has
    options and event subscriptions (C{core.set_options}, C{core.subscribe}).
    """

    def options() -> dict[str, bool]:
        """
        The session's options: C{legacy_jobs}, C{private_methods}, C{py_exceptions}.
        """

    def set_options(options: dict[str, bool]) -> None:
        """
        Change the options named in C{options} (already checked).
        """

    def subscribe(name: str) -> str:
        """
        Subscribe to the event C{name}; return the subscription id.
        """

    def unsubscribe(subscription_id: str) -> bool:
        """
        End the subscription C{subscription_id}; whether the session held it.
        """


#: The C{state} of a node that heartbeats (L{ICluster.nodes}).
NODE_ONLINE = "ONLINE"

#: The C{state} of a node gone for longer than C{[cluster] node_timeout}.
NODE_OFFLINE = "OFFLINE"


class ICluster(Interface):
    """
    The daemons that share this one's job store, as the RPC layer sees
    them: one node alone (L{midjobs.local_cluster.LocalCluster}), or the
    nodes of a cluster on PostgreSQL.

    The methods are for jobs that are not in this daemon's memory (its
    C{JobsQueue}): the caller looks there first.  Called on the reactor
    thread; each returns a Deferred.
    """

    node = Attribute("This daemon's node name (a str: C{[cluster] node}), the C{node} of its jobs' records.")

    def nodes() -> Any:
        """
        A Deferred firing with a list of the nodes, this one included, each
        a dict: C{name} (str), C{advertise} (the URL at which the other
        nodes reach it, a str, or C{None}), C{state} (L{NODE_ONLINE} or
        L{NODE_OFFLINE}), C{heartbeat} (its last heartbeat, an aware
        C{datetime}) and C{running_jobs} (an int).
        """

    def record(job_id: int) -> Any:
        """
        A Deferred firing with the record (C{docs/protocol.rst}, "The job
        record") of job C{job_id}, one not in this daemon's memory, or
        C{None} if there is no such job.
        """

    def abort(record: dict[str, Any], reason: str) -> Any:
        """
        Abort the job of C{record} (from L{record}), which runs on another
        node, with C{reason} as its error.  A Deferred firing with C{None}
        once the node that runs it was told (its end comes as a job event).

        @raise midjobs.errors.CallError: (as the Deferred's failure)
            C{ENOENT}, no node runs that job.
        """

    def catalogue_changed(kind: str, identity: int) -> None:
        """
        Tell the other nodes that the user (C{kind} C{"user"}) or API key
        (C{"api_key"}) numbered C{identity} changed or is gone, or that the
        web session (C{"web_session"}) numbered C{identity} ended, so that
        they update or log out their sessions of it at once.
        """

    def check_accepting() -> None:
        """
        Check that this node may take new jobs: it may not while it is cut
        from the job store its cluster shares.

        @raise midjobs.errors.CallError: C{ENOTCONN}, it may not.
        """

    def wait(job_id: int, progress: Any = None) -> Any:
        """
        A Deferred firing with the final record of job C{job_id}, running
        on another node, once it has ended (at once if it has).  Cancelling
        the Deferred stops waiting.  C{progress}, if given, is called with
        each C{progress} of the job's records meanwhile (a dict).

        @raise midjobs.errors.CallError: (as the Deferred's failure)
            C{ENOENT}, there is no such job.
        """
