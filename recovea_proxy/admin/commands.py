"""The admin commands of the `recovea` CLI: they talk to the database directly (the
embedded one when RECOVEA_DATABASE_URL is unset) and print human text or `--json`.
Secrets are printed once, at creation, and only then."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from recovea_proxy.admin import cache_policy, caps, kms_commands, limits, routes, slim_policy
from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.keyring import load_keyring, retire_local_key
from recovea_proxy.config import Settings
from recovea_proxy.reconcile import commands as reconcile_commands
from recovea_proxy.store.database import connect, owner_url
from recovea_proxy.store.migrate import apply_migrations

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(text)


def run(command: Command, args: argparse.Namespace, *, migrate_first: bool = True) -> int:
    """Connect as the owner, migrate, run one command; 1 with a clear line on bad input."""
    settings = Settings.from_env()

    async def main() -> dict[str, Any]:
        conn = await connect(await asyncio.to_thread(owner_url, settings))
        try:
            if migrate_first:
                await apply_migrations(conn)
            return await command(conn, args, settings)
        finally:
            await conn.close()

    try:
        asyncio.run(main())
    except ops.OperationError as exc:
        print(f"recovea: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"recovea: the database is unreachable ({type(exc).__name__})", file=sys.stderr)
        return 3
    return 0


async def migrate(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    applied = await apply_migrations(conn)
    emit(args, {"applied": applied}, f"applied: {', '.join(applied) or 'nothing (up to date)'}")
    return {}


async def init(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> dict[str, Any]:
    workspace_id, key = await ops.init(conn)
    emit(
        args,
        {"workspace_id": workspace_id, "key_id": key.id, "key": key.secret, "role": key.role},
        f"workspace default: {workspace_id}\nadmin key id: {key.id}\n"
        f"admin key (shown once, store it now): {key.secret}",
    )
    return {}


async def workspace_create(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    workspace_id = await ops.create_workspace(conn, args.name, args.plan)
    emit(
        args,
        {"workspace_id": workspace_id, "name": args.name, "plan": args.plan},
        f"workspace {args.name}: {workspace_id}",
    )
    return {}


async def key_create(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    key = await ops.create_key(
        conn, args.workspace, role=args.role, env=args.env, project=args.project, team=args.team
    )
    emit(
        args,
        {
            "key_id": key.id,
            "workspace_id": key.workspace_id,
            "role": key.role,
            "env": key.env,
            "key": key.secret,
        },
        f"key id: {key.id}\nkey (shown once, store it now): {key.secret}",
    )
    return {}


async def key_revoke(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    revoked = await ops.revoke_key(conn, args.key_id)
    if not revoked:
        raise ops.OperationError(f"no active key {args.key_id}")
    emit(args, {"key_id": args.key_id, "revoked": True}, f"revoked {args.key_id}")
    return {}


async def provider_key_set(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    secret = sys.stdin.readline().strip()
    keyring = await asyncio.to_thread(load_keyring, settings)
    key_id = await ops.set_provider_key(conn, keyring, args.workspace, args.provider, secret)
    last_four = secret[-4:]
    emit(
        args,
        {"provider_key_id": key_id, "provider": args.provider, "last_four": last_four},
        f"stored {args.provider} key ****{last_four} for workspace {args.workspace}",
    )
    return {}


async def provider_key_rotate(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    if args.new_local_key:
        if settings.kms_key_id:
            raise ops.OperationError("--new-local-key does not apply with RECOVEA_KMS_KEY_ID set")
        await asyncio.to_thread(retire_local_key, settings)
    keyring = await asyncio.to_thread(load_keyring, settings)
    count = await ops.rewrap_provider_keys(conn, keyring)
    emit(
        args,
        {"rewrapped": count, "master_key_id": keyring.current.key_id},
        f"re-wrapped {count} provider key(s) under {keyring.current.key_id}",
    )
    return {}


def add_commands(commands: Any) -> None:
    """Register the admin subcommands on the CLI's subparsers."""

    for name, handler, help_text in (
        ("migrate", migrate, "apply sql/ migrations"),
        ("init", init, "first run: workspace 'default' and an admin key (printed once)"),
    ):
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(
            run=lambda args, h=handler: run(h, args, migrate_first=h is not migrate)
        )

    workspace = commands.add_parser("workspace", help="workspaces").add_subparsers(
        dest="action", required=True
    )
    create = workspace.add_parser("create", help="create a workspace")
    create.add_argument("name")
    create.add_argument("--plan", choices=("free", "pro"), default="free")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=lambda args: run(workspace_create, args))
    from recovea_proxy.meter.commands import add_commands as add_ledger_commands

    add_ledger_commands(commands, workspace)
    kms_commands.add_commands(workspace, run)
    cache_policy.add_commands(commands, run)
    limits.add_commands(commands, run)
    routes.add_commands(commands, run)
    slim_policy.add_commands(commands, run)
    reconcile_commands.add_commands(commands, run)
    caps.add_commands(commands, run)

    key = commands.add_parser("key", help="rcv_ keys").add_subparsers(dest="action", required=True)
    kc = key.add_parser("create", help="create an rcv_ key (printed once)")
    kc.add_argument("--workspace", required=True)
    kc.add_argument("--role", choices=("admin", "member"), default="member")
    kc.add_argument("--env", choices=("live", "test"), default="live")
    kc.add_argument("--project")
    kc.add_argument("--team")
    kc.add_argument("--json", action="store_true")
    kc.set_defaults(run=lambda args: run(key_create, args))
    kr = key.add_parser("revoke", help="revoke an rcv_ key")
    kr.add_argument("key_id")
    kr.add_argument("--json", action="store_true")
    kr.set_defaults(run=lambda args: run(key_revoke, args))

    provider_key = commands.add_parser("provider-key", help="provider keys").add_subparsers(
        dest="action", required=True
    )
    ps = provider_key.add_parser("set", help="store a provider key read from stdin")
    ps.add_argument("--workspace", required=True)
    ps.add_argument("--provider", required=True, choices=ops.PROVIDERS)
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(run=lambda args: run(provider_key_set, args))
    pr = provider_key.add_parser(
        "rotate", help="re-wrap every data key under the current master key"
    )
    pr.add_argument(
        "--new-local-key", action="store_true", help="retire the local master key, make a new one"
    )
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(run=lambda args: run(provider_key_rotate, args))
