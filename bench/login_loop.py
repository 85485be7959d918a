#!/usr/bin/env python3
"""Signs in COUNT times through Passerelle and its development provider, as a browser would: one keep-alive
connection to Passerelle and one to the provider, reused from one login to the next (bench/run.sh, CPU per
login). Prints each new session's Cookie header value, one per line.

    login_loop.py PROXY_BASE COUNT [START_PATH] [IDENTITY] [SESSION_COOKIE_REGEX]

SESSION_COOKIE_REGEX picks the session cookies among those left after the callback: Passerelle's by default,
`mod_auth_openidc_session.*` for Apache with mod_auth_openidc (the same script signs in through both).

Each login: GET START_PATH (302 to the provider, the flow cookie set), the provider's authorize page (its
hidden `request` field), POST approve (302 to the callback), GET the callback with the flow cookie (302 back,
the session cookies set). Any other answer stops with a message naming the step.
"""

import http.client
import re
import sys
from urllib.parse import urlencode, urlsplit


class Site:
    """One keep-alive connection to one origin, reopened if the server closed it."""

    def __init__(self, origin):
        parts = urlsplit(origin)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host, self.port = parts.hostname, parts.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def request(self, method, target, headers, body=None):
        for attempt in (1, 2):
            try:
                self.conn.request(method, target, body=body, headers=headers)
                res = self.conn.getresponse()
                data = res.read()
                return res, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def target_of(url):
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def set_cookies(res, jar):
    for value in res.headers.get_all("Set-Cookie") or []:
        name, _, rest = value.partition("=")
        cookie_value = rest.split(";", 1)[0]
        expired = re.search(r";\s*max-age=0\b", value, re.I) or re.search(r";\s*expires=[^;]*1970", value, re.I)
        if expired or cookie_value == "":
            jar.pop(name.strip(), None)
        else:
            jar[name.strip()] = cookie_value


def cookie_header(jar):
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def fail(step, res, data):
    sys.exit(f"login_loop: {step} answered {res.status}: {data[:300]!r}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    proxy = Site(sys.argv[1])
    count = int(sys.argv[2])
    start = sys.argv[3] if len(sys.argv) > 3 else "/bench/start"
    identity = sys.argv[4] if len(sys.argv) > 4 else "angela"
    pattern = sys.argv[5] if len(sys.argv) > 5 else r"(__Host-)?passerelle(\.\d+)?"
    provider = None
    html = {"Accept": "text/html"}
    for _ in range(count):
        jar = {}
        res, data = proxy.request("GET", start, html)
        if res.status != 302:
            fail("start", res, data)
        set_cookies(res, jar)
        authorize = res.headers["Location"]
        provider = provider or Site(authorize)
        res, data = provider.request("GET", target_of(authorize), html)
        found = re.search(rb'name="request" value="([^"]*)"', data)
        if res.status != 200 or not found:
            fail("authorize page", res, data)
        form = urlencode({"request": found.group(1).decode(), "identity": identity})
        res, data = provider.request(
            "POST",
            urlsplit(authorize).path + "/approve",
            {**html, "Content-Type": "application/x-www-form-urlencoded"},
            form,
        )
        if res.status != 302:
            fail("approve", res, data)
        callback = res.headers["Location"]
        res, data = proxy.request("GET", target_of(callback), {**html, "Cookie": cookie_header(jar)})
        if res.status != 302:
            fail("callback", res, data)
        set_cookies(res, jar)
        session = {k: v for k, v in jar.items() if re.fullmatch(pattern, k)}
        if not session:
            sys.exit("login_loop: no session cookie after the callback")
        print(cookie_header(session), flush=True)


main()
