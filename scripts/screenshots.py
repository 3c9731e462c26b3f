"""Screenshots of the Dagster UI for the docs, taken with headless Chromium against a throwaway stack.

    .venv/bin/python scripts/screenshots.py [--out docs]

Starts the DHIS2 sandbox (with its chap route), dagster-webserver and dagster-daemon on loopback
with a temporary DAGSTER_HOME that has no dagster.yaml (SQLite, queued run coordinator: the
daemon starts the runs), lets the discovery sensor add the configured models as partitions,
runs model 1 (monthly, succeeds) and model 3 (chap rejects it with a grouped 400), waits for the
overview sensors, then writes:

    <out>/launchpad.png                  launchpad of dhis2_chap_prediction, partition 1 picked
    <out>/report-succeeded.png           report asset, partition view of model 1 (metadata table)
    <out>/report-succeeded-markdown.png  the same with its markdown report opened ("[Show Markdown]")
    <out>/report-rejected.png            report asset, partition view of model 3
    <out>/report-rejected-markdown.png   the same with its markdown report (chap's grouped 400)
    <out>/overview.png                   chap_predictions_overview, latest event, the models table inline

Chromium is driven over the DevTools protocol on a pipe, so the script can pick a partition and
click "[Show Markdown]" (Dagster shows markdown metadata of 1000 characters or more only behind
that link), and each shot waits for the text that proves the page is right, else it fails.

Everything it starts (sandbox, webserver, daemon, chromium) is stopped on exit, failures included.
Needs Debian's chromium at /usr/bin/chromium (apt-get update && apt-get install -y chromium);
pngquant, if installed, shrinks the PNGs.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHROMIUM = Path("/usr/bin/chromium")
LOCATION = "chap_scheduler_dagster"
JOB = "dhis2_chap_prediction"
REPO_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}

PARTITIONS = """{ partitionSetsOrError(pipelineName: "dhis2_chap_prediction",
  repositorySelector: {repositoryLocationName: "chap_scheduler_dagster", repositoryName: "__repository__"}) {
  ... on PartitionSets { results { partitionsOrError { ... on Partitions { results { name } } } } } } }"""

ADD_PARTITION = """mutation Add($sel: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $sel, partitionsDefName: $name, partitionKey: $key) { __typename } }"""

OVERVIEW = """{ assetOrError(assetKey: {path: ["chap_predictions_overview"]}) { __typename
  ... on Asset { assetMaterializations(limit: 1) { timestamp
    metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""

NUX = "mutation { setNuxSeen }"
SHOULD_SHOW_NUX = "{ shouldShowNux }"

REPORT_ASSET = "dhis2_chap_prediction_report"
OVERVIEW_ASSET = "chap_predictions_overview"
NUX_TEXT = "Join the Dagster community"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def existing_partitions(stack) -> set[str]:
    sets = stack.graphql(PARTITIONS)["partitionSetsOrError"]["results"]
    return {p["name"] for s in sets for p in s["partitionsOrError"]["results"]}


def ensure_partitions(stack, keys: set[str]) -> None:
    try:
        stack.wait_until(lambda: keys <= existing_partitions(stack), 45, "the discovery sensor adding partitions",
                         interval=0.5)
        log(f"discovery sensor added partitions {sorted(existing_partitions(stack))}")
        return
    except AssertionError:  # DagsterStack.wait_until's timeout
        log("discovery sensor was slow; adding partitions over GraphQL")
    for key in sorted(keys):
        answer = stack.graphql(ADD_PARTITION, {"sel": REPO_SELECTOR, "name": "chap_configured_models", "key": key})
        kind = answer["addDynamicPartition"]["__typename"]
        if kind not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise RuntimeError(f"could not add partition {key}: {kind}")


def overview_counts(stack) -> dict[str, int]:
    asset = stack.graphql(OVERVIEW)["assetOrError"]
    if asset["__typename"] != "Asset" or not asset["assetMaterializations"]:
        return {}
    entries = asset["assetMaterializations"][0]["metadataEntries"]
    return {e["label"]: e["intValue"] for e in entries if e.get("intValue") is not None}


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

    No network port and no extra Python package: Chromium reads commands from fd 3 and writes
    answers to fd 4, each a JSON message ended by a NUL byte. A plain ``--screenshot`` run cannot
    click, and two of the shots need a click (the partition picker, the report's "[Show Markdown]").
    """

    def __init__(self, scratch: Path, width: int = 1500, height: int = 1000):
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=scratch))  # fresh user-data-dir
        self.width = width
        argv = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--hide-scrollbars",
            "--mute-audio", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
            "--remote-debugging-pipe", "about:blank",
        ]
        to_child, self._out = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._in, from_child = os.pipe()  # Chromium writes answers on fd 4, we read them
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        # Copies above fd 10, so the dup2 onto 1..4 in the child can never clobber one of them.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child, devnull)]
        for fd in (to_child, from_child, devnull):
            os.close(fd)
        devnull = high.pop()
        try:
            # posix_spawn, not Popen(preexec_fn=...): this process runs the sandbox's threads.
            self.pid = os.posix_spawn(str(CHROMIUM), argv, os.environ, setsid=True, file_actions=[
                (os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4),
                (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2),
            ])
        finally:
            for fd in (*high, devnull):
                os.close(fd)
        self._buffer = b""
        self._id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._in], [], [], left)[0]:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout:.0f} s")
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            try:
                answer = json.loads(raw)
            except ValueError as exc:
                raise RuntimeError(f"chromium sent {raw[:300]!r} on the DevTools pipe during {method}") from exc
            if answer.get("id") == self._id:  # everything else is an event: ignored
                if "error" in answer:
                    raise RuntimeError(f"chromium {method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str, height: int, width: int | None = None) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width or self.width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        return Page(self, target, session, url)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        exited = False
        deadline = time.monotonic() + 10
        while not exited and time.monotonic() < deadline:
            exited = os.waitpid(self.pid, os.WNOHANG) != (0, 0)
            time.sleep(0 if exited else 0.1)
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own session: a hung browser, or helpers left behind
        except ProcessLookupError:
            pass
        if not exited:
            os.waitpid(self.pid, 0)
        for fd in (self._in, self._out):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class Page:
    browser: Chromium
    target: str
    session: str
    url: str

    def js(self, expression: str):
        answer = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                       "awaitPromise": True}, self.session)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails'].get('text')}")
        return answer["result"].get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 45, scope: str = "document.body") -> None:
        """Until every needle is on the page (or in ``scope``); then fonts and a moment to settle."""
        expression = f"(() => {{ const e = {scope}; return e ? e.innerText : ''; }})()"
        deadline = time.monotonic() + timeout
        while True:
            text = self.js(expression) or ""
            missing = [n for n in needles if n not in text]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url}: {missing} not on the page after {timeout:.0f} s; it shows:\n"
                                   f"{self.text()[:1500]}")
            time.sleep(0.5)
        self.js("document.fonts.ready.then(() => true)")
        time.sleep(1.5)  # network answers in flight, dialog transitions
        if NUX_TEXT in self.text():
            raise RuntimeError(f"{self.url}: the first-visit dialog is showing (setNuxSeen did not stick)")

    def click_text(self, label: str) -> None:
        found = self.js(
            "(() => { const e = [...document.querySelectorAll('body *')].find("
            f"x => x.children.length === 0 && x.textContent.trim() === {json.dumps(label)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise RuntimeError(f"{self.url}: nothing labelled {label!r} to click")

    def type_into(self, selector: str, text: str) -> None:
        if not self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                       " if (!e) return false; e.focus(); e.click(); return true; })()"):
            raise RuntimeError(f"{self.url}: no {selector}")
        time.sleep(0.5)
        self.browser.send("Input.insertText", {"text": text}, self.session)
        time.sleep(0.5)
        for kind in ("keyDown", "keyUp"):
            self.browser.send("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                         "windowsVirtualKeyCode": 13}, self.session)

    def screenshot(self, png: Path) -> None:
        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        png.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})


def take_screenshots(base_url: str, out: Path, scratch: Path) -> list[Path]:
    """Every shot waits for the text that proves the page shows what it should, else it fails."""
    written = []
    browser = Chromium(scratch)
    try:
        def shot(name: str, page: Page) -> None:
            png = out / name
            page.screenshot(png)
            shrink(png)
            written.append(png)
            log(f"{png} ({png.stat().st_size // 1024} KB)")

        # (a) the launchpad, partition (configured model) 1 picked: its tag and the pre-filled config.
        page = browser.open(f"{base_url}/locations/{LOCATION}/jobs/{JOB}/playground", height=1000)
        page.wait_for_text("Launchpad", "end_mode", "DHIS2_PASSWORD")
        page.type_into('input[placeholder="Partition"]', "1")
        page.wait_for_text("partition: 1", "end_mode", "DHIS2_PASSWORD", "No errors")
        shot("launchpad.png", page)
        page.close()

        # (b, c) the report asset's partition view, then its markdown report opened.
        for key, name, needles in (
            ("1", "report-succeeded", ("Run report: Sandboxia monthly", "Status:", "SUCCEEDED WITH WARNINGS", "Warnings (3)", "Predicted periods")),
            ("3", "report-rejected", ("Run report: Sandboxia gappy rainfall", "FAILED", "submit_prediction",
                                      "Rejected cells (grouped by covariate)", "rainfall")),
        ):
            url = f"{base_url}/assets/{REPORT_ASSET}?view=partitions&partition={key}"
            page = browser.open(url, height=1100)
            page.wait_for_text("Latest materialization", "[Show Markdown]", "configured_model", "run_id")
            shot(f"{name}.png", page)
            page.close()
            page = browser.open(url, height=1400)
            page.wait_for_text("[Show Markdown]", "configured_model")
            page.click_text("[Show Markdown]")
            page.wait_for_text(*needles, scope="document.querySelector('.bp5-dialog, [role=dialog]')")
            shot(f"{name}-markdown.png", page)
            page.close()

        # (d) the overview asset: its latest event; the "models" table renders inline (the markdown, with its
        # warnings section over 1000 characters, sits behind "[Show Markdown]").
        # Wide, so the models table shows all its columns (warnings and last success included) without wrapping.
        page = browser.open(f"{base_url}/assets/{OVERVIEW_ASSET}?view=events", height=1250, width=2400)
        page.wait_for_text("last_success_utc", "never run", "Sandboxia monthly", "succeeded with warnings", "failed")
        shot("overview.png", page)
        page.close()
    finally:
        browser.close()
    return written


def shrink(png: Path) -> None:
    pngquant = shutil.which("pngquant")
    if pngquant:
        subprocess.run([pngquant, "--force", "--skip-if-larger", "--quality=70-95", "--strip",
                        "--output", str(png), str(png)], check=False)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(out: Path, scratch: Path) -> None:
    from dhis2_sandbox import Sandbox, SandboxConfig

    from chap_scheduler_dagster_tests.dagster_stack import DagsterStack

    with Sandbox(SandboxConfig(port=0)) as sandbox:
        log(f"sandbox DHIS2 at {sandbox.base_url}")
        home = scratch / "dagster_home"  # no dagster.yaml: SQLite storage, QueuedRunCoordinator
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DHIS2_", "CHAP_SCHEDULER_", "DAGSTER_"))}
        env |= {
            "DAGSTER_HOME": str(home),
            "DAGSTER_DISABLE_TELEMETRY": "1",  # loopback only
            "DHIS2_BASE_URL": sandbox.base_url,
            "DHIS2_USERNAME": "admin",
            "DHIS2_PASSWORD": "district",  # the sandbox's public demo account
            "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.5",
        }
        # Create the SQLite storage once before two processes open it: the webserver and the daemon
        # racing on a fresh DAGSTER_HOME can leave two alembic heads ("more than one head present").
        subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"], env=env, cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        stack = DagsterStack(home=home, env=env)
        try:
            # The default run coordinator (no dagster.yaml) queues runs: only the daemon starts them.
            stack.start(daemon=True)
            log(f"dagster-webserver at {stack.url}, daemon running")

            ensure_partitions(stack, {"1", "3"})
            runs = {}
            for key, config in (("1", {"end_mode": "calculated"}), ("3", {})):
                launched = stack.launch(key, {"ops": {"probe_covariates": {"config": config}}})
                if launched["__typename"] != "LaunchRunSuccess":
                    raise RuntimeError(f"launch of model {key} failed: {launched}")
                runs[key] = launched["run"]["runId"]
            for (key, run_id), expected in zip(runs.items(), ("SUCCESS", "FAILURE")):
                status = stack.wait_for_run(run_id, timeout=180)["status"]
                log(f"model {key}: run {run_id[:8]} {status}")
                if status != expected:
                    raise RuntimeError(f"model {key} ended {status}, expected {expected}")
            # The run-status sensors re-render the overview after each run (the daemon ticks about every 30 s).
            counts = stack.wait_until(
                lambda: (c := overview_counts(stack)) and c.get("succeeded", 0) >= 1 and c.get("failed", 0) >= 1 and c,
                120, "the overview sensors materializing chap_predictions_overview", interval=1,
            )
            log(f"overview materialized: {counts}")

            stack.graphql(NUX)  # the first-visit "Join the Dagster community" dialog, off for this instance
            if stack.graphql(SHOULD_SHOW_NUX)["shouldShowNux"]:
                raise RuntimeError("setNuxSeen did not turn the first-visit dialog off")

            take_screenshots(stack.url, out, scratch)
        except BaseException:
            print(stack.log_tail(), file=sys.stderr)
            raise
        finally:
            stack.stop()
            _wait_for_groups(stack)


def _wait_for_groups(stack, timeout: float = 20) -> None:
    """Until nothing is left in the process groups of the webserver and the daemon.

    ``stop`` waits for the two leaders only; a run worker or code server in their group may still
    be finishing (a run stopped mid-way writes its cancellation to DAGSTER_HOME). SIGKILL after timeout.
    """
    deadline = time.monotonic() + timeout
    for process in stack.processes:
        while True:
            try:
                os.killpg(process.pid, 0 if time.monotonic() < deadline else signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="directory for the PNGs (default: docs)")
    args = parser.parse_args()

    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found. Install Debian's chromium first (as root):\n"
              "    apt-get update && apt-get install -y chromium", file=sys.stderr)
        return 2

    # SIGTERM/SIGHUP unwind like Ctrl-C, so every finally stops what it started.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="chap-screenshots-"))
    try:
        run(args.out.resolve(), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
