"""The sandbox HTTP server: a DHIS2 stand-in (auth, system info, analytics, org units, routes)."""

from __future__ import annotations

import base64
import functools
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from . import analytics
from .chap import ChapStandIn
from .datavalues import DataValueStore
from .world import ROOT_OU, World, utc_today

JSON = "application/json;charset=UTF-8"
ROUTE_CODE = "chap"
ROUTE_ID = "chapRoute01"
DHIS2_VERSION = "2.41.4"
HOST = "127.0.0.1"  # loopback only, by design

HTML_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
HTML_LOGIN = (
    b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>DHIS2 login</title></head>"
    b"<body><h1>DHIS2 login</h1><form action=\"/dhis-web-commons-security/login.action\" method=\"post\">"
    b"<input name=\"j_username\"><input name=\"j_password\" type=\"password\"><button>Sign in</button>"
    b"</form></body></html>"
)


@dataclass
class SandboxConfig:
    port: int = 0
    org_units: int = 12
    months: int = 72
    seed: int = 7
    chap_url: str | None = None
    username: str = "admin"
    password: str = "district"
    token: str = "d2pat_sandboxtoken000000000000000000"
    chap_api: Literal["prediction-setups", "legacy"] = "prediction-setups"
    job_seconds: float = 0.6
    today: date | None = None  # "today" of the world; None = the real UTC date
    # Emulate a front proxy's URL limit (0 = off): longer request targets get 414 with an HTML body.
    # (The stdlib server itself refuses request lines over 64 KiB.)
    max_url_length: int = 0
    # How far back the weekly setup 2 starts (its startPeriod = last complete week - (n - 1), capped by history).
    weekly_setup_weeks: int = 110


CHAP_POST_FAULTS = ("ok", "lost_502", "lost_503", "lost_504", "lost_drop", "not_created")


@dataclass
class Faults:
    slow_seconds: float = 0.0
    fail_next: int = 0
    html_next: int = 0
    chap_job: Literal["ok", "fail", "hang"] = "ok"
    route_down: bool = False
    datavalues_fail_next: int = 0  # next N POST /api/dataValueSets answer 503 (HTML, like a proxy)
    datavalues_write_status: int = 0  # every real (not dry-run) dataValueSets POST answers this status (0 = off)
    chap_empty_prediction: bool = False  # chap's prediction-entry answers [] (a prediction without values)
    chap_thresholds_fail: bool = False  # chap's POST /v1/analytics/thresholds answers 400 (no complete year)
    # The next POST through the chap route loses its answer: lost_502/503/504 forward it to chap
    # (which creates the job) and then answer that status; lost_drop forwards it and closes the
    # connection without an answer; not_created answers 502 without forwarding (chap never saw it).
    chap_post: Literal["ok", "lost_502", "lost_503", "lost_504", "lost_drop", "not_created"] = "ok"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def update(self, data: dict) -> None:
        names = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        for k in data:
            if k not in names:
                raise ValueError(f"unknown fault {k!r}; known: {sorted(names)}")
        if "chap_job" in data and data["chap_job"] not in ("ok", "fail", "hang"):
            raise ValueError("chap_job must be one of ok, fail, hang")
        if "chap_post" in data and data["chap_post"] not in CHAP_POST_FAULTS:
            raise ValueError(f"chap_post must be one of {', '.join(CHAP_POST_FAULTS)}")
        with self._lock:
            for k, v in data.items():
                if k in ("fail_next", "html_next", "datavalues_fail_next", "datavalues_write_status"):
                    v = int(v)
                elif k == "slow_seconds":
                    v = float(v)
                elif k in ("route_down", "chap_empty_prediction", "chap_thresholds_fail"):
                    v = bool(v)
                setattr(self, k, v)

    def reset(self) -> None:
        self.update({"slow_seconds": 0.0, "fail_next": 0, "html_next": 0, "chap_job": "ok", "route_down": False,
                     "datavalues_fail_next": 0, "datavalues_write_status": 0, "chap_empty_prediction": False,
                     "chap_thresholds_fail": False,
                     "chap_post": "ok"})

    def take_chap_post(self) -> str:
        """The POST fault for this request (one-shot: it applies to one POST, then resets)."""
        with self._lock:
            fault, self.chap_post = self.chap_post, "ok"
            return fault

    def take(self, name: str) -> bool:
        with self._lock:
            n = getattr(self, name)
            if n > 0:
                setattr(self, name, n - 1)
                return True
            return False


def web_message(status: int, reason: str, message: str, error_code: str | None = None, **extra: Any) -> dict:
    msg = {"httpStatus": reason, "httpStatusCode": status, "status": "ERROR", "message": message}
    if error_code:
        msg["errorCode"] = error_code
    msg.update(extra)
    return msg


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sandbox: "Sandbox"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._conns: set = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request, client_address):  # type: ignore[override]
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[override]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive client connections so their handler threads end."""
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DHIS2-sandbox"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK
        # add ~40 ms to every keep-alive response.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- plumbing ------------------------------------------------------------------------
    def _read_body(self) -> bytes | bytearray:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            rfile = self.rfile
            while True:
                line = rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(rfile.read(size))
                rfile.readline(3)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0:
            return b""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.rfile.readinto(view[got:])
            if not k:
                break
            got += k
        if got < n:
            del buf[got:]
        return buf  # a bytearray (no 2nd copy of a few-hundred-MB body); orjson reads it directly

    def _send(self, status: int, body: bytes, ctype: str = JSON, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.command != "HEAD" and body and len(body) <= 65536:
            self._headers_buffer.append(b"\r\n" + body)  # one write for small responses
            self.flush_headers()
            return
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, orjson.dumps(obj), JSON, headers)

    def _handle(self) -> None:
        sb = self.server.sandbox
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send_json(400, web_message(400, "Bad Request", "Malformed request body"), {"Connection": "close"})
            return
        sb.requests.append((self.command, self.path, len(body)))
        limit = sb.config.max_url_length
        if limit and len(self.path) > limit:
            self._send(414, b"<html><body><h1>414 Request-URI Too Large</h1></body></html>", "text/html")
            return
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        try:
            if path.startswith("/__sandbox/"):
                self._sandbox_control(path[len("/__sandbox"):], query, body, split.query)
            elif path == "/api" or path.startswith("/api/"):
                self._api(path, query, body, split.query)
            elif path.startswith("/dhis-web-login"):
                self._send(200, HTML_LOGIN, "text/html;charset=UTF-8")
            else:
                self._send_json(404, web_message(404, "Not Found", f"No resource found for {path}"))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - safety net
            self._send_json(500, web_message(500, "Internal Server Error", f"{type(exc).__name__}: {exc}"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    # -- sandbox control (no auth) -----------------------------------------------------------
    def _sandbox_control(self, path: str, query, body: bytes, raw_query: str) -> None:
        sb = self.server.sandbox
        if path.startswith("/chap/") or path == "/chap":
            status, data, ctype = sb.chap.handle(self.command, path[len("/chap"):], query, body)
            self._send(status, data, ctype)
            return
        if path == "/faults":
            if self.command == "POST":
                try:
                    sb.faults.update(orjson.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    self._send_json(400, {"error": str(exc)})
                    return
            self._send_json(200, sb.faults.as_dict())
            return
        if path == "/reset" and self.command == "POST":
            sb.faults.reset()
            self._send_json(200, sb.faults.as_dict())
            return
        if path == "/chap-setups":
            if self.command == "POST":
                try:
                    s = sb.chap.add_setup(orjson.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    self._send_json(400, {"error": str(exc)})
                    return
                self._send_json(201, s)
                return
            self._send_json(200, [v for k in sorted(sb.chap.setups) if (v := sb.chap.setups.get(k))])
            return
        if path == "/chap-predictions" and self.command == "POST":
            try:
                pid = sb.chap.add_prediction(**orjson.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(201, {"id": pid})
            return
        if path.startswith("/chap-setups/") and self.command == "DELETE":
            sid = path.rsplit("/", 1)[1]
            ok = sid.isdigit() and sb.chap.remove_setup(int(sid))
            self._send_json(200 if ok else 404, {"deleted": ok})
            return
        if path == "/data-values" and self.command == "POST":
            try:
                d = orjson.loads(body or b"{}")
                sb.world.set_value(d["dataElement"], d["period"], d["orgUnit"], d.get("value"))
            except (ValueError, TypeError, KeyError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, {"changed": 1})
            return
        if path == "/world":
            w = sb.world
            self._send_json(200, {
                "today": w.today.isoformat(), "orgUnits": w.n, "months": w.months, "root": ROOT_OU,
                "noGeometryOrgUnit": w.no_geometry_ou, "dataElements": list(w.data_elements),
            })
            return
        self._send_json(404, {"error": f"unknown sandbox path {path}"})

    # -- DHIS2 API -------------------------------------------------------------------------
    def _auth(self) -> str | None:
        """Return None if authorised, else 'none' (no credentials) or 'bad'."""
        cfg = self.server.sandbox.config
        h = self.headers.get("Authorization")
        if not h:
            return "none"
        scheme, _, cred = h.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                user, _, pw = base64.b64decode(cred.strip()).decode("utf-8").partition(":")
            except Exception:
                return "bad"
            return None if (user == cfg.username and pw == cfg.password) else "bad"
        if scheme == "apitoken":
            return None if cred.strip() == cfg.token else "bad"
        return "bad"

    def _api(self, path: str, query, body: bytes, raw_query: str) -> None:
        sb = self.server.sandbox
        faults = sb.faults
        if faults.slow_seconds > 0:
            time.sleep(faults.slow_seconds)
        if faults.take("fail_next"):
            self._send(503, HTML_503, "text/html")
            return
        if faults.take("html_next"):
            self._send(200, HTML_LOGIN, "text/html;charset=UTF-8")
            return
        auth = self._auth()
        if auth == "none":
            self._send(302, b"", "text/plain", {"Location": f"{sb.base_url}/dhis-web-login/"})
            return
        if auth == "bad":
            self._send_json(401, web_message(401, "Unauthorized", "Unauthorized"),
                            {"WWW-Authenticate": 'Basic realm="DHIS2"'})
            return
        parts = [p for p in path.split("/") if p][1:]
        if parts and parts[0].isdigit():  # /api/41/...
            parts = parts[1:]
        method = self.command
        if parts[:1] == ["routes"]:
            self._routes(parts[1:], query, body, raw_query)
            return
        if parts in (["dataValueSets"], ["dataValueSets.json"]) or (parts == ["resourceTables", "analytics"]
                                                                     and method == "POST"):
            self._data_values(parts, query, body)
            return
        if method != "GET":
            self._send_json(405, web_message(405, "Method Not Allowed", f"Request method '{method}' is not supported"))
            return
        if parts == ["system", "info"]:
            self._send_json(200, sb.system_info())
        elif parts == ["system", "ping"]:
            self._send(200, b"pong", "text/plain")
        elif parts == ["me"]:
            self._send_json(200, {"id": "M5zQapPyTZI", "username": sb.config.username, "name": "Sandbox Admin",
                                  "displayName": "Sandbox Admin",
                                  "organisationUnits": [{"id": u} for u in sb.capture_roots],
                                  "authorities": list(sb.user_authorities)})
        elif parts == ["analytics"] or parts == ["analytics.json"]:
            try:
                resp = analytics.build(sb.world, query, sb.world.today if sb.config.today else utc_today())
            except analytics.AnalyticsError as exc:
                self._send_json(409, web_message(409, "Conflict", exc.message, exc.code))
                return
            self._send(200, orjson.dumps(resp), JSON)
        elif parts and parts[0] in ("organisationUnits", "organisationUnits.json", "organisationUnits.geojson"):
            self._org_units(parts, query)
        elif parts and parts[0] in ("dataElements", "dataElements.json"):
            self._collection("dataElements", [sb.world.data_element_metadata(d) for d in sb.world.data_elements.values()],
                             parts[1:], query, "DataElement")
        elif parts and parts[0] in ("dataSets", "dataSets.json"):
            self._collection("dataSets", [sb.world.data_set_metadata(d) for d in sb.world.data_sets],
                             parts[1:], query, "DataSet")
        else:
            self._send_json(404, web_message(404, "Not Found", f"No endpoint for /api/{'/'.join(parts)}"))

    # -- data values -------------------------------------------------------------------------
    def _data_values(self, parts: list[str], query, body: bytes) -> None:
        sb = self.server.sandbox
        q = dict(query)
        if parts[0] == "resourceTables":
            sb.analytics_runs.append(q)
            self._send_json(200, {"httpStatus": "OK", "httpStatusCode": 200, "status": "OK",
                                  "message": "Initiated ANALYTICS_TABLE", "response": {"jobType": "ANALYTICS_TABLE",
                                                                                      "id": "sbxAnalytic1"}})
            return
        if self.command == "GET":
            status, answer = sb.data_values.read(list(query), sb.capture_roots)
            self._send_json(status, answer)
            return
        if self.command != "POST":
            self._send_json(405, web_message(405, "Method Not Allowed", f"Request method '{self.command}' is not supported"))
            return
        if sb.faults.take("datavalues_fail_next"):
            self._send(503, HTML_503, "text/html")
            return
        dry_run = q.get("dryRun", "false").lower() == "true"
        status = sb.faults.datavalues_write_status
        if status and not dry_run:
            self._send_json(status, web_message(status, "Unauthorized" if status == 401 else "Error",
                                                "Sandbox fault: the write was refused"))
            return
        try:
            payload = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            self._send_json(400, web_message(400, "Bad Request", "Invalid JSON payload"))
            return
        strategy = q.get("importStrategy", "CREATE_AND_UPDATE").upper()
        code, answer = sb.data_values.import_values(payload, dry_run=dry_run, strategy=strategy,
                                                    capture_roots=sb.capture_roots, today=sb.world.today)
        self._send_json(code, answer)

    # -- metadata collections ----------------------------------------------------------------
    def _org_units(self, parts: list[str], query) -> None:
        w = self.server.sandbox.world
        if parts[0] == "organisationUnits.geojson":
            q: dict[str, list[str]] = {}
            for k, v in query:
                q.setdefault(k, []).append(v)
            levels = {int(x) for x in q.get("level", ["1"]) if x.isdigit()}
            units = ([w.root_unit()] if 1 in levels else []) + (
                [w.district_unit(i) for i in range(w.n)] if 2 in levels else [])
            feats = []
            for u in units:
                if "geometry" not in u:
                    continue
                props = {"code": u["code"], "name": u["name"], "level": str(u["level"])}
                if "parent" in u:
                    props["parent"] = u["parent"]["id"]
                    props["parentGraph"] = u["parent"]["id"]
                props["groups"] = []
                feats.append({"type": "Feature", "id": u["id"], "geometry": u["geometry"], "properties": props})
            self._send(200, orjson.dumps({"type": "FeatureCollection", "features": feats}),
                       "application/json+geojson")
            return
        if len(parts) == 2:
            u = w.unit(parts[1])
            if u is None:
                self._send_json(404, web_message(404, "Not Found",
                                                 f"OrganisationUnit with id {parts[1]} could not be found.", "E1005"))
                return
            fl = dict(query).get("fields")
            self._send_json(200, _select(u, _parse_fields(fl)) if fl else u)
            return
        ids = [v.split(":", 2)[2].strip("[]").split(",") for k, v in query if k == "filter" and v.startswith("id:in:")]
        if ids:  # build only the units asked for (a national check asks for 10,000 in batches)
            units = [u for uid in dict.fromkeys(ids[0]) if (u := w.unit(uid)) is not None]
        else:
            units = [w.root_unit()] + [w.district_unit(i) for i in range(w.n)]
        self._collection("organisationUnits", units, [], query, "OrganisationUnit", prefiltered_ids=True)

    def _collection(self, key: str, objs: list[dict], rest: list[str], query, type_name: str,
                    prefiltered_ids: bool = False) -> None:
        if rest:
            for o in objs:
                if o["id"] == rest[0]:
                    fl = dict(query).get("fields")
                    self._send_json(200, _select(o, _parse_fields(fl)) if fl else o)
                    return
            self._send_json(404, web_message(404, "Not Found",
                                             f"{type_name} with id {rest[0]} could not be found.", "E1005"))
            return
        fields_param = None
        paging = True
        page, page_size = 1, 50
        filters = []
        for k, v in query:
            if k == "fields":
                fields_param = v if fields_param is None else f"{fields_param},{v}"
            elif k == "paging":
                paging = v.lower() != "false"
            elif k == "page":
                page = max(1, int(v)) if v.isdigit() else 1
            elif k == "pageSize":
                page_size = max(1, int(v)) if v.isdigit() else 50
            elif k == "filter":
                filters.append(v)
            elif k == "level":
                filters.append(f"level:eq:{v}")
        for f in filters:
            prop, _, rest_f = f.partition(":")
            op, _, val = rest_f.partition(":")
            objs = [o for o in objs if _match(o, prop, op, val)]
        fl = _parse_fields(fields_param or "id,displayName")
        total = len(objs)
        if paging:
            page_count = max(1, -(-total // page_size))
            chunk = objs[(page - 1) * page_size: page * page_size]
            pager = {"page": page, "pageCount": page_count, "total": total, "pageSize": page_size}
            base = self.server.sandbox.base_url
            if page < page_count:
                pager["nextPage"] = f"{base}/api/{key}?page={page + 1}"
            if page > 1:
                pager["prevPage"] = f"{base}/api/{key}?page={page - 1}"
            self._send_json(200, {"pager": pager, key: [_select(o, fl) for o in chunk]})
        else:
            self._send_json(200, {key: [_select(o, fl) for o in objs]})

    # -- routes --------------------------------------------------------------------------
    def _routes(self, rest: list[str], query, body: bytes, raw_query: str) -> None:
        sb = self.server.sandbox
        route = sb.route_object()
        if not sb.route_present:  # an administrator has not created the route (yet)
            if not rest:
                self._collection("routes", [], [], query, "Route")
            else:
                self._send_json(404, web_message(404, "Not Found", f"Route {rest[0]} not found"))
            return
        if not rest:
            if self.command != "GET":
                self._send_json(405, web_message(405, "Method Not Allowed", "Method not allowed"))
                return
            objs = [route]
            self._collection("routes", objs, [], query, "Route")
            return
        code = rest[0]
        if code not in (ROUTE_CODE, ROUTE_ID):
            self._send_json(404, web_message(404, "Not Found", f"Route {code} not found"))
            return
        if len(rest) == 1:
            if self.command == "GET":
                fl = dict(query).get("fields")
                self._send_json(200, _select(route, _parse_fields(fl)) if fl else route)
            else:
                self._send_json(405, web_message(405, "Method Not Allowed", "Method not allowed"))
            return
        if rest[1] != "run":
            self._send_json(404, web_message(404, "Not Found", f"No endpoint for /api/routes/{'/'.join(rest)}"))
            return
        if not sb.may_run_route():
            self._send_json(403, web_message(403, "Forbidden", "User does not have access to route"))
            return
        if sb.faults.route_down:
            self._send_json(502, web_message(502, "Bad Gateway", "Bad Gateway"))
            return
        # keep the raw (still-encoded) sub path for forwarding
        raw_path = urlsplit(self.path).path
        marker = f"/{code}/run"
        sub = raw_path.split(marker, 1)[1] if marker in raw_path else ""
        post_fault = sb.faults.take_chap_post() if self.command == "POST" else "ok"
        if post_fault == "not_created":
            self._send_json(502, web_message(502, "Bad Gateway", "Bad Gateway"))
            return
        if sb.config.chap_url:
            status, data, ctype = sb.forward(self.command, sub, raw_query, body, self.headers)
        else:
            status, data, ctype = sb.chap.handle(self.command, unquote(sub) or "/", query, body)
        if post_fault == "lost_drop":  # chap has it; its answer never reaches the caller
            self.close_connection = True
            return
        if post_fault.startswith("lost_"):
            code = int(post_fault[len("lost_"):])
            reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}[code]
            self._send_json(code, web_message(code, reason, reason))
            return
        self._send(status, data, ctype)


# -- field selection / filters -------------------------------------------------------------
def _parse_fields(spec: str | None) -> list[tuple[str, list | None]] | None:
    """Parse ``id,name,parent[id,name]`` into [(name, subfields|None)]; None means all."""
    if not spec:
        return None
    out: list[tuple[str, list | None]] = []
    i, n, cur = 0, len(spec), ""
    while i < n:
        ch = spec[i]
        if ch == ",":
            if cur:
                out.append((cur.strip(), None))
            cur = ""
        elif ch in "[(":
            depth, j = 1, i + 1
            while j < n and depth:
                if spec[j] in "[(":
                    depth += 1
                elif spec[j] in "])":
                    depth -= 1
                j += 1
            out.append((cur.strip(), _parse_fields(spec[i + 1: j - 1])))
            cur = ""
            i = j
            if i < n and spec[i] == ",":
                i += 1
            continue
        else:
            cur += ch
        i += 1
    if cur.strip():
        out.append((cur.strip(), None))
    if any(name in ("*", ":all", ":owner") for name, _ in out):
        return None
    return out


def _select(obj: dict, fl) -> dict:
    if fl is None:
        return obj
    out = {}
    for name, sub in fl:
        if name not in obj:
            continue
        v = obj[name]
        if sub is not None and isinstance(v, dict):
            v = _select(v, sub)
        elif sub is not None and isinstance(v, list):
            v = [_select(x, sub) if isinstance(x, dict) else x for x in v]
        out[name] = v
    return out


@functools.lru_cache(maxsize=64)
def _in_items(val: str) -> frozenset[str]:
    # Parsed once per request, not once per object (10,000 org units × 600 ids per filter).
    return frozenset(x.strip() for x in val.strip("[]").split(",") if x.strip())


def _match(obj: dict, prop: str, op: str, val: str) -> bool:
    cur: Any = obj
    for p in prop.split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    sval = "" if cur is None else str(cur)
    if op == "eq":
        return sval == val
    if op == "!eq" or op == "ne":
        return sval != val
    if op in ("in", "!in"):
        return (sval in _in_items(val)) == (op == "in")
    if op == "ilike":
        return val.lower() in sval.lower()
    if op == "like":
        return val in sval
    if op == "null":
        return cur is None
    if op == "!null":
        return cur is not None
    return False


def _chunks(body: bytes | bytearray, size: int = 1 << 20):
    """Stream a body in 1 MB pieces (httpx re-slices one big buffer per send(), which is slow)."""
    view = memoryview(body)
    for i in range(0, len(body), size):
        yield bytes(view[i:i + size])


class Sandbox:
    """A loopback DHIS2 stand-in with a chap route. Use as a context manager or start()/stop()."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any):
        cfg = config or SandboxConfig()
        if overrides:
            cfg = SandboxConfig(**(asdict(cfg) | overrides))
        self.config = cfg
        self.world = World(cfg.org_units, cfg.months, cfg.seed, cfg.today)
        self.faults = Faults()
        self.chap = ChapStandIn(self.world, cfg.job_seconds, cfg.chap_api, self.faults,
                                weekly_setup_weeks=cfg.weekly_setup_weeks)
        self.requests: list[tuple[str, str, int]] = []
        self.data_values = DataValueStore(self.world)
        self.capture_roots: list[str] = [ROOT_OU]  # the user's data capture org units
        self.analytics_runs: list[dict] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._http = None
        self.system_id = "a1b2c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
        # Preflight knobs: the user's authorities (/api/me), whether the route 'chap' exists, and
        # the authorities it demands (any one of them lets a user run it; empty = everyone).
        self.user_authorities: list[str] = ["ALL"]
        self.route_present = True
        self.route_authorities: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Sandbox":
        if self._server is not None:
            return self
        if self.config.chap_url and self._http is None:
            import httpx

            self._http = httpx.Client(timeout=60.0)
        srv = _Server((HOST, self.config.port), _Handler)
        srv.sandbox = self
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"dhis2-sandbox-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        srv.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            return self.config.port
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.config.username, self.config.password)

    # -- helpers ----------------------------------------------------------------------------
    def system_info(self) -> dict:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        return {
            "contextPath": self.base_url,
            "userAgent": "",
            "calendar": "iso8601",
            "dateFormat": "yyyy-mm-dd",
            "serverDate": now.isoformat(timespec="milliseconds"),
            "serverTimeZoneId": "Etc/UTC",
            "serverTimeZoneDisplayName": "Coordinated Universal Time",
            "lastAnalyticsTableSuccess": now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat(
                timespec="milliseconds"),
            "version": DHIS2_VERSION,
            "revision": "5a3b9c1",
            "buildTime": "2025-01-15T10:42:13.000",
            "systemId": self.system_id,
            "systemName": "DHIS2 sandbox (Sandboxia)",
            "instanceBaseUrl": self.base_url,
            "emailConfigured": False,
            "redisEnabled": False,
            "encryption": False,
            "isMetadataVersionEnabled": False,
        }

    def route_object(self) -> dict:
        url = (self.config.chap_url.rstrip("/") if self.config.chap_url else f"{self.base_url}/__sandbox/chap")
        return {"id": ROUTE_ID, "code": ROUTE_CODE, "name": "chap", "displayName": "chap",
                "url": f"{url}/**", "disabled": False, "responseTimeoutSeconds": 60,
                "authorities": list(self.route_authorities)}

    def may_run_route(self) -> bool:
        need = set(self.route_authorities)
        return not need or "ALL" in self.user_authorities or bool(need & set(self.user_authorities))

    def make_stale(self, data_element_id: str, periods: int) -> None:
        """Stop a data element's values ``periods`` native periods before its usual last one (a lagging feed)."""
        de = self.world.data_elements[data_element_id]
        de.last -= periods

    def forward(self, method: str, sub: str, raw_query: str, body: bytes, headers) -> tuple[int, bytes, str]:
        import httpx

        if self._http is None:
            self._http = httpx.Client(timeout=60.0)
        url = self.config.chap_url.rstrip("/") + (sub if sub.startswith("/") else "/" + sub)
        if raw_query:
            url += "?" + raw_query
        fwd = {"X-Forwarded-User": self.config.username}
        for h in ("Content-Type", "Accept", "Accept-Language", "User-Agent"):
            if headers.get(h):
                fwd[h] = headers[h]
        try:
            r = self._http.request(method, url, content=_chunks(body) if body else None,
                                   headers=fwd | ({"Content-Length": str(len(body))} if body else {}))
        except httpx.TimeoutException:
            return 504, orjson.dumps(web_message(504, "Gateway Timeout", "Gateway Timeout")), JSON
        except httpx.HTTPError:
            return 502, orjson.dumps(web_message(502, "Bad Gateway", "Bad Gateway")), JSON
        return r.status_code, r.content, r.headers.get("content-type", "application/json")
