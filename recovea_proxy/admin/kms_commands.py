"""`recovea workspace kms set|clear` and `recovea workspace show`: a workspace's own
AWS KMS key on the command line. Like the other admin commands they talk to the
database directly, as its owner, and print human text or `--json`; they reach KMS
with the AWS identity of the environment they run in (the gateway's, normally)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from recovea_proxy.admin import kms_operations as kms
from recovea_proxy.auth.keyring import load_keyring
from recovea_proxy.config import Settings

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


def _print(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(orjson.dumps(result).decode() if args.json else text)


async def kms_set(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    keyring = await asyncio.to_thread(load_keyring, settings)
    result = await kms.set_workspace_kms(conn, keyring, args.workspace, args.key_id)
    _print(
        args,
        result,
        f"workspace {result['workspace_id']} is on its own KMS key {result['kms_key_arn']};"
        f" re-wrapped {result['rewrapped']} provider key(s)",
    )
    return result


async def kms_clear(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    keyring = await asyncio.to_thread(load_keyring, settings)
    result = await kms.clear_workspace_kms(
        conn, keyring, args.workspace, drop_provider_keys=args.drop_provider_keys
    )
    done = (
        f"deleted {result['dropped']} provider key(s); store them again"
        if args.drop_provider_keys
        else f"re-wrapped {result['rewrapped']} provider key(s)"
    )
    _print(
        args,
        result,
        f"workspace {result['workspace_id']} is on the deployment's master key"
        f" {result['master_key_id']}; {done}",
    )
    return result


async def show(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> dict[str, Any]:
    result = await kms.show_workspace(conn, args.workspace_id)
    _print(args, result, _describe(result))
    return result


def _describe(shown: dict[str, Any]) -> str:
    lines = [
        f"workspace {shown['name']}: {shown['id']}",
        f"plan: {shown['plan']}; retention: {shown['retention_days'] or 'plan default'}",
    ]
    own = shown["kms"]
    if own["key_arn"] is None:
        lines.append("KMS key: the deployment's master key")
    else:
        lines.append(f"KMS key: {own['key_id']} ({own['key_arn']}), set {own['set_at']}")
        if own["status"] == "unknown":
            lines.append("  status: not used by a gateway since it was set")
        elif own["status"] == "available":
            lines.append(f"  status: available (last seen working {own['checked_at']})")
        else:
            lines.append(
                f"  status: UNAVAILABLE: {own['reason']} since {own['since']}"
                f" (last seen {own['checked_at']}); requests get 503 provider_key_unavailable"
            )
    for key in shown["provider_keys"]:
        lines.append(
            f"provider key {key['provider']}: ****{key['last_four']},"
            f" wrapped by the {key['wrapped_by']}'s key"
        )
    return "\n".join(lines)


def add_commands(workspace: Any, run: Runner) -> None:
    """Register `show` and `kms set|clear` on the CLI's `workspace` group."""
    shown = workspace.add_parser("show", help="a workspace, its own KMS key and its status")
    shown.add_argument("workspace_id")
    shown.add_argument("--json", action="store_true")
    shown.set_defaults(run=lambda args: run(show, args))

    own_key = workspace.add_parser(
        "kms", help="the workspace's own AWS KMS key for its provider keys"
    ).add_subparsers(dest="kms_action", required=True)
    setting = own_key.add_parser(
        "set", help="wrap the workspace's provider keys under its own KMS key (re-wraps them)"
    )
    setting.add_argument("--workspace", required=True)
    setting.add_argument("--key-id", required=True, help="key id, key ARN or alias/NAME")
    setting.add_argument("--json", action="store_true")
    setting.set_defaults(run=lambda args: run(kms_set, args))
    clearing = own_key.add_parser(
        "clear", help="back to the deployment's master key (re-wraps the provider keys)"
    )
    clearing.add_argument("--workspace", required=True)
    clearing.add_argument(
        "--drop-provider-keys",
        action="store_true",
        help="delete the provider keys instead of re-wrapping them (the key is gone for good)",
    )
    clearing.add_argument("--json", action="store_true")
    clearing.set_defaults(run=lambda args: run(kms_clear, args))
