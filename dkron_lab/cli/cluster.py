"""``dkron-lab leave`` and ``dkron-lab raft ...``: the node's membership and the Raft group."""

from __future__ import annotations

import click

from dkron_lab.cli.remote import Target, client_options, connect, echo_json, table

__all__ = ["leave", "raft"]


@click.command()
@client_options
def leave(target: Target) -> None:
    """Make the node at --address leave the cluster: it stops gracefully (running jobs finish)."""
    with connect(target) as client:
        client.leave()
    click.echo(f"{target.address} is leaving")


@click.group()
def raft() -> None:
    """Inspect and change the Raft group of servers."""


@raft.command("list-peers")
@click.option("--json", "as_json", is_flag=True, help="Print the peers as JSON.")
@client_options
def raft_list_peers(target: Target, as_json: bool) -> None:
    """List the Raft voters as the server at --address sees them."""
    with connect(target) as client:
        peers = client.raft_peers()
    if as_json:
        echo_json(peers)
        return
    headers = ("NODE", "ADDRESS", "STATE", "REACHABLE")
    rows = [
        (
            peer["name"] or "-",
            peer["address"],
            "leader" if peer["leader"] else "follower",
            "self" if peer["role"] == "self" else "yes" if peer["reachable"] else "no",
        )
        for peer in peers
    ]
    click.echo(table(headers, rows))


@raft.command("add-peer")
@click.option("--peer-addr", required=True, help="The new server's --bind-addr, host:port.")
@client_options
def raft_add_peer(target: Target, peer_addr: str) -> None:
    """Add a started server (its --join naming the current servers) to the Raft group."""
    with connect(target) as client:
        client.add_raft_peer(peer_addr)
    click.echo(f"added {peer_addr} to the Raft group")


@raft.command("remove-peer")
@click.option("--peer-id", required=True, help="The server to remove: node name or host:port.")
@client_options
def raft_remove_peer(target: Target, peer_id: str) -> None:
    """Remove a server from the Raft group (stop that server afterwards)."""
    with connect(target) as client:
        client.remove_raft_peer(peer_id)
    click.echo(f"removed {peer_id} from the Raft group; stop it now")
