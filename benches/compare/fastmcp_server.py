"""A FastMCP server protected by FastMCP's OCIProvider, with one tool that calls OCI
as the logged-in user: the Python twin of `examples/mcp_server.rs` in proxy mode.

The tool `oci_request(path)` builds `oci.auth.signers.TokenExchangeSigner` from the
caller's upstream (identity-domain) access token, caches it by the token's `jti`,
and makes a signed GET to the OCI API with `requests`, as FastMCP's OCIProvider
documentation shows.

Configuration (environment; `compare.py` sets it from the emulator's output):

    OCI_DOMAIN_URL     identity domain, e.g. http://127.0.0.1:PORT
    OCI_CLIENT_ID      the confidential app's client id
    OCI_CLIENT_SECRET  its secret
    OCI_API_BASE       the OCI API base URL
    MCP_BASE_URL       this server's public URL, e.g. http://127.0.0.1:8001
    MCP_BIND_PORT      the port to listen on (127.0.0.1)
    MCP_JWT_SIGNING_KEY  optional; signs FastMCP's own tokens

Run: python fastmcp_server.py (from the venv that holds fastmcp and oci).
"""

import os
import sys
import threading

import requests
from fastmcp import FastMCP
from fastmcp.server.auth.providers.oci import OCIProvider
from fastmcp.server.dependencies import get_access_token
from oci.auth.signers import TokenExchangeSigner

DOMAIN_URL = os.environ["OCI_DOMAIN_URL"].rstrip("/")
CLIENT_ID = os.environ["OCI_CLIENT_ID"]
CLIENT_SECRET = os.environ["OCI_CLIENT_SECRET"]
API_BASE = os.environ["OCI_API_BASE"].rstrip("/")
BASE_URL = os.environ["MCP_BASE_URL"].rstrip("/")
PORT = int(os.environ["MCP_BIND_PORT"])

auth = OCIProvider(
    config_url=f"{DOMAIN_URL}/.well-known/openid-configuration",
    client_id=CLIENT_ID,
    client_secret=CLIENT_SECRET,
    base_url=BASE_URL,
    redirect_path="/auth/callback",
    # Loopback redirect URIs only, as our proxy's default.
    allowed_client_redirect_uris=["http://127.0.0.1:*", "http://localhost:*"],
    jwt_signing_key=os.environ.get("MCP_JWT_SIGNING_KEY") or None,
)

mcp = FastMCP("oci-compare", auth=auth)

# One signer per user token, by `jti` (the documented pattern; a lock because sync
# tools may run on worker threads).
_signers: dict[str, TokenExchangeSigner] = {}
_signers_lock = threading.Lock()
# One pooled HTTP client for every user, as the Rust server's reqwest client.
_http = requests.Session()


def _signer() -> TokenExchangeSigner:
    token = get_access_token()
    if token is None:
        raise RuntimeError("no access token")
    jti = token.claims.get("jti")
    with _signers_lock:
        signer = _signers.get(jti) if jti else None
        if signer is None:
            signer = TokenExchangeSigner(
                jwt_or_func=token.token,
                oci_domain_url=DOMAIN_URL,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
            )
            if jti:
                _signers[jti] = signer
            # compare.py counts these lines: one per token exchange (no secret in it).
            print(f"signer created; cached signers: {len(_signers)}", file=sys.stderr, flush=True)
    return signer


@mcp.tool
def oci_request(path: str) -> dict:
    """Call the OCI REST API as you (GET); returns {status, body}."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("path must start with a single '/'")
    response = _http.get(f"{API_BASE}{path}", auth=_signer(), timeout=30)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return {"status": response.status_code, "body": body}


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=PORT, log_level="warning", show_banner=False)
