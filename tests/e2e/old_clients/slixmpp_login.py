"""Logs in once with whatever slixmpp the running interpreter has, and reports how it went.

Run by ``test_old_clients.py`` under an interpreter other than the suite's own: a virtualenv
with the slixmpp release Debian 12 ships (1.8.3), or Debian's ``python3`` with its
``python3-slixmpp``. It uses only API that slixmpp has had since 1.5, and prints one JSON line:
``{"version": ..., "ok": bool, "connections": n, "mechanism": ..., "jid": ..., "error": ...}``.

Usage: slixmpp_login.py JID PASSWORD HOST PORT
"""

import asyncio
import json
import ssl
import sys

import slixmpp

TIMEOUT = 60


def main() -> int:
    jid, password, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = slixmpp.ClientXMPP(jid, password)
    # The test server's certificate is self-signed; TLS 1.3 is what a current server speaks.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    client.ssl_context = context
    result = {"version": slixmpp.__version__, "ok": False, "connections": 0}
    done = loop.create_future()

    def finish(ok: bool, error: str | None = None) -> None:
        if done.done():
            return
        result["ok"] = ok
        if error:
            result["error"] = error
        done.set_result(None)

    def connected(_event) -> None:
        result["connections"] += 1

    def session_start(_event) -> None:
        result["jid"] = str(client.boundjid)
        mech = client.plugin["feature_mechanisms"].mech
        result["mechanism"] = getattr(mech, "name", None)
        finish(True)

    client.add_event_handler("connected", connected)
    client.add_event_handler("session_start", session_start)
    client.add_event_handler("failed_all_auth", lambda _e: finish(False, "failed_all_auth"))
    client.add_event_handler("no_auth", lambda _e: finish(False, "no_auth"))
    client.add_event_handler(
        "stream_error", lambda e: finish(False, f"stream error: {e['condition']}"))
    client.add_event_handler("disconnected", lambda _e: finish(False, "disconnected"))
    client.connect(address=(host, port))
    try:
        loop.run_until_complete(asyncio.wait_for(done, TIMEOUT))
    except asyncio.TimeoutError:
        result["error"] = f"no session after {TIMEOUT} s"
    if result["ok"]:
        client.disconnect()
        loop.run_until_complete(asyncio.sleep(0.2))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
