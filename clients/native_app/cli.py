"""python -m clients.native_app [options] COMMAND: the sample native app from a terminal."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser

import requests

from .app import AuthError, Config, NativeApp, default_state_dir


def _agreement(item: dict) -> str:
    return f"{item.get('agreement_id')}  {item.get('agreement_name')}  ({item.get('agreement_role')})"


def parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m clients.native_app", description=__doc__)
    p.add_argument("--issuer", default=env.get("NATIVE_APP_ISSUER", "http://localhost:5000"))
    p.add_argument("--client-id", default=env.get("NATIVE_APP_CLIENT_ID", "mobile-app"))
    p.add_argument("--time-api", default=env.get("NATIVE_APP_TIME_API", "http://127.0.0.1:5003"))
    p.add_argument("--state-dir", default=env.get("NATIVE_APP_STATE_DIR") or str(default_state_dir()))
    commands = p.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="sign in through the browser")
    login.add_argument("--agreement", help="agreement number to start in (skips the chooser)")
    login.add_argument("--no-browser", action="store_true", help="only print the address to open")
    commands.add_parser("whoami", help="who is signed in, in which agreement")
    listing = commands.add_parser("agreements", help="list (and search) your agreements")
    listing.add_argument("-q", "--search", default="")
    listing.add_argument("--cursor")
    switch = commands.add_parser("switch", help="switch agreement (token exchange, no browser)")
    switch.add_argument("agreement")
    commands.add_parser("entries", help="time entries of the current agreement")
    commands.add_parser("logout", help="revoke and forget the stored sign-in")
    return p


def main(argv: list[str] | None = None, app: NativeApp | None = None) -> int:
    args = parser().parse_args(argv)
    config = Config(issuer=args.issuer, client_id=args.client_id, time_api=args.time_api, state_dir=args.state_dir)
    if app is None:
        opener = (lambda url: None) if getattr(args, "no_browser", False) else webbrowser.open
        app = NativeApp(config, open_browser=opener)
    try:
        if args.command == "login":
            claims = app.login(agreement_hint=args.agreement)
            print(f"Signed in as {claims.get('email') or claims['sub']}")
            if claims.get("agreement_id"):
                print("Agreement: " + _agreement(claims))
        elif args.command == "whoami":
            info = app.userinfo()
            print(f"{info.get('name') or ''} <{info.get('email') or info['sub']}>")
            print("Agreement: " + _agreement(info))
        elif args.command == "agreements":
            page = app.agreements(q=args.search, cursor=args.cursor)
            for item in page["items"]:
                print(_agreement(item))
            if page.get("next_cursor"):
                print(f"More: --cursor {page['next_cursor']}")
        elif args.command == "switch":
            print("Now in agreement " + _agreement(app.switch(args.agreement)))
        elif args.command == "entries":
            body = app.time_entries()
            print(f"Time entries in {body['agreement_id']} {body['agreement_name']}:")
            for entry in body["entries"]:
                print(f"  {entry['date']}  {entry['hours']:>4} h  {entry['project']}")
        elif args.command == "logout":
            app.logout()
            print("Signed out.")
    except AuthError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except requests.RequestException as error:
        print(f"Error: cannot reach the service: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
