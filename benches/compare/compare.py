"""Warm `oci_request` through two MCP servers in OAuth-proxy mode, on one machine:

- ours: `examples/mcp_server.rs` (release build, `MCP_BASE_URL` set: the crate's
  OAuth proxy, `SignerCache`, reqwest signing middleware);
- FastMCP's `OCIProvider` (`fastmcp_server.py`: `TokenExchangeSigner` cached by
  `jti`, `requests`).

Both log in to the same standalone emulator process (`examples/emulator.rs`) as
identity domain and OCI API. A user logs in through each server's own OAuth flow
(dynamic registration, PKCE, the consent page, the emulator's headless login, the
code grant) with a cookie-keeping httpx "browser" that follows no redirect by
itself. Then one FastMCP `Client` per server (same client code, bearer token, one
streamable-HTTP session) makes warm calls: the first calls (warm-up, not timed) do
the token exchange; each timed call is served from the signer cache and makes one
signed GET to the emulator. Timed calls alternate between the servers in blocks
so that machine noise hits both alike.

    python compare.py --calls 500
"""

import argparse
import asyncio
import base64
import hashlib
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx
from fastmcp import Client

HERE = Path(__file__).resolve().parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", HERE.parent.parent / "target"))
# Where the MCP client pretends to listen for its authorization code (never bound:
# the browser stops at this redirect).
CLIENT_REDIRECT = "http://127.0.0.1:9/callback"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(process: subprocess.Popen, wanted: list[str], timeout: float) -> dict[str, str]:
    """Reads `key: value` lines from a child's stdout until every wanted key is seen."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while not all(k in found for k in wanted):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {wanted}")
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited ({process.wait()}) before printing {wanted}")
        line = line.strip()
        if line.startswith("listening on "):
            found["listening on"] = line.removeprefix("listening on ")
        else:
            key, _, value = line.partition(": ")
            found[key] = value
    return found


def wait_http(process: subprocess.Popen, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def form_of(page: str) -> tuple[str, list[tuple[str, str]]]:
    """The consent page's form: its action and its hidden fields (both servers'
    pages are one POST form with hidden inputs and `action` buttons)."""
    form = re.search(r"<form\b([^>]*)>(.*?)</form>", page, re.S | re.I)
    if form is None:
        raise RuntimeError("no form on the consent page")
    action = re.search(r'\baction="([^"]*)"', form.group(1))
    fields = []
    for tag in re.findall(r"<input\b[^>]*>", form.group(2), re.I):
        if 'type="hidden"' not in tag:
            continue
        name = re.search(r'\bname="([^"]*)"', tag)
        value = re.search(r'\bvalue="([^"]*)"', tag)
        if name:
            fields.append((unescape(name.group(1)), unescape(value.group(1)) if value else ""))
    return unescape(action.group(1)) if action else "", fields


def log_in(base: str) -> tuple[str, bool]:
    """One user's login through the server's OAuth flow; returns the access token and
    whether a consent page was answered."""
    with httpx.Client(follow_redirects=False, timeout=30) as http:
        meta = http.get(f"{base}/.well-known/oauth-authorization-server").raise_for_status().json()
        registration = http.post(
            meta["registration_endpoint"],
            json={
                "client_name": "compare.py",
                "redirect_uris": [CLIENT_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
        )
        if registration.status_code not in (200, 201):
            raise RuntimeError(f"registration: {registration.status_code} {registration.text}")
        client_id = registration.json()["client_id"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CLIENT_REDIRECT,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
            "resource": f"{base}/mcp",
        }
        scopes = meta.get("scopes_supported")
        if scopes:
            params["scope"] = " ".join(scopes)
        url = f"{meta['authorization_endpoint']}?{urlencode(params)}"

        def follow(response: httpx.Response) -> tuple[str, httpx.Response]:
            """Follows redirects until the client's redirect URI or a page."""
            for _ in range(10):
                if not response.is_redirect:
                    return "", response
                target = urljoin(str(response.url), response.headers["location"])
                if target.startswith(CLIENT_REDIRECT):
                    return target, response
                response = http.get(target)
            raise RuntimeError("more than 10 redirects")

        done, page = follow(http.get(url))
        consented = False
        while not done:
            if consented or page.status_code != 200:
                raise RuntimeError(f"stopped at a page ({page.status_code}): {page.text[:500]}")
            action, fields = form_of(page.text)
            fields.append(("action", "approve"))
            done, page = follow(http.post(
                urljoin(str(page.url), action),
                content=urlencode(fields),
                headers={"content-type": "application/x-www-form-urlencoded"},
            ))
            consented = True
        query = parse_qs(urlparse(done).query)
        if query.get("state") != [state] or "code" not in query:
            raise RuntimeError(f"no code in the redirect: {sorted(query)}")
        token = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": CLIENT_REDIRECT,
                "client_id": client_id,
                "code_verifier": verifier,
                "resource": f"{base}/mcp",
            },
        )
        if token.status_code != 200:
            raise RuntimeError(f"token: {token.status_code} {token.text}")
        return token.json()["access_token"], consented


def check(result, path: str) -> None:
    data = result.structured_content or {}
    if data.get("status") != 200:
        raise RuntimeError(f"oci_request({path}) did not return 200: {data}")


async def measure(servers: dict[str, str], tokens: dict[str, str], args) -> dict[str, list[float]]:
    """Timed calls per (server, what): `oci_request` and, as a baseline of the client,
    transport, bearer check and session, `tools/list` (MCP `ping` would be leaner,
    but rmcp answers it with -32601 to this client)."""
    times: dict[tuple[str, str], list[float]] = {}
    clients = {name: Client(url, auth=tokens[name], timeout=30) for name, url in servers.items()}
    for client in clients.values():
        await client.__aenter__()
    for name, client in clients.items():
        info = client.server_info
        print(f"session with {name}: protocol {client.protocol_version}, "
              f"server {info.name if info else '?'} {info.version if info else ''}")
    try:
        for name, client in clients.items():
            for _ in range(args.warmup):
                check(await client.call_tool("oci_request", {"path": args.path}), args.path)
                await client.list_tools()
        done = 0
        while done < args.calls:
            block = min(args.block, args.calls - done)
            for name, client in clients.items():
                for _ in range(block):
                    start = time.perf_counter()
                    result = await client.call_tool("oci_request", {"path": args.path})
                    times.setdefault((name, "oci_request"), []).append(time.perf_counter() - start)
                    check(result, args.path)
                if args.ping:
                    for _ in range(block):
                        start = time.perf_counter()
                        if not await client.list_tools():
                            raise RuntimeError("tools/list is empty")
                        times.setdefault((name, "tools/list"), []).append(time.perf_counter() - start)
            done += block
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500, help="timed calls per server")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per server first")
    parser.add_argument("--block", type=int, default=50, help="calls per server before switching")
    parser.add_argument("--no-baseline", dest="ping", action="store_false",
                        help="skip the tools/list baseline")
    parser.add_argument("--path", default="/20160918/compartments", help="the GET oci_request makes")
    parser.add_argument("--logs", type=Path, default=HERE.parent.parent / "target" / "compare-logs",
                        help="where the servers' logs go (a fresh directory below it per run)")
    parser.add_argument("--emulator", default=str(TARGET / "release/examples/emulator"))
    parser.add_argument("--mcp-server", default=str(TARGET / "release/examples/mcp_server"))
    args = parser.parse_args()

    ours_port, fast_port = free_port(), free_port()
    ours_base, fast_base = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{fast_port}"
    children: list[subprocess.Popen] = []
    args.logs.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="compare-", dir=args.logs))
    try:
        emulator = subprocess.Popen(
            [args.emulator],
            env={**os.environ, "RUST_LOG": "warn",
                 "EMULATOR_REDIRECT_URIS": f"{ours_base}/auth/callback,{fast_base}/auth/callback"},
            stdout=subprocess.PIPE, text=True,
        )
        children.append(emulator)
        emu = read_until(emulator, ["domain", "api", "client_id", "client_secret"], 30)
        common = {
            **os.environ,
            "OCI_DOMAIN_URL": emu["domain"].rstrip("/"),
            "OCI_CLIENT_ID": emu["client_id"],
            "OCI_CLIENT_SECRET": emu["client_secret"],
            "OCI_API_BASE": emu["api"].rstrip("/"),
            "MCP_JWT_SIGNING_KEY": secrets.token_urlsafe(32),
        }
        ours = subprocess.Popen(
            [args.mcp_server],
            # Debug for the signer cache and sessions only: an event per token
            # exchange, none on a warm call.
            env={**common, "MCP_BASE_URL": ours_base, "MCP_BIND": f"127.0.0.1:{ours_port}",
                 "RUST_LOG": "warn,oci_token_exchange::cache=debug,"
                             "oci_token_exchange::session=debug"},
            stdout=subprocess.PIPE, stderr=(logs / "ours.log").open("w"), text=True,
        )
        children.append(ours)
        read_until(ours, ["listening on"], 30)
        fast = subprocess.Popen(
            [sys.executable, str(HERE / "fastmcp_server.py")],
            env={**common, "MCP_BASE_URL": fast_base, "MCP_BIND_PORT": str(fast_port)},
            stderr=(logs / "fastmcp.log").open("w"),
        )
        children.append(fast)
        wait_http(fast, f"{fast_base}/.well-known/oauth-authorization-server", 60)

        servers = {"ours (Rust, oci-token-exchange)": f"{ours_base}/mcp",
                   "FastMCP OCIProvider (Python)": f"{fast_base}/mcp"}
        logins = {name: log_in(url.removesuffix("/mcp")) for name, url in servers.items()}
        tokens = {name: token for name, (token, _) in logins.items()}
        times = asyncio.run(measure(servers, tokens, args))
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    import fastmcp
    import oci
    print(f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, fastmcp {fastmcp.__version__}, oci {oci.__version__}")
    print(f"calls per server: {args.calls} timed (blocks of {args.block}, alternating), "
          f"{args.warmup} warm-up; tool: oci_request(path={args.path!r}); "
          f"client: fastmcp.Client, streamable HTTP, bearer")
    exchanges = {
        "ours (Rust, oci-token-exchange)": (logs / "ours.log").read_text().count("session refresh started"),
        "FastMCP OCIProvider (Python)": (logs / "fastmcp.log").read_text().count("signer created"),
    }
    print("token exchanges during the run (expected 1 each: the first warm-up call): "
          + ", ".join(f"{name}: {n}" for name, n in exchanges.items()) + f" (logs in {logs})")
    for name, (_, consented) in logins.items():
        print(f"login through {name}: registration, PKCE, "
              f"{'consent page approved' if consented else 'no consent page'}, emulator login, code grant")
    print(f"{'server':36} {'call':12} {'median ms':>10} {'p90 ms':>10} {'mean ms':>10} {'calls/s':>8}")
    for (name, what), samples in times.items():
        ms = sorted(t * 1000 for t in samples)
        p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        print(f"{name:36} {what:12} {statistics.median(ms):10.2f} {p90:10.2f} "
              f"{statistics.fmean(ms):10.2f} {1000 / statistics.fmean(ms):8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
