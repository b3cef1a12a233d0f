"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
daemon with two real SmolLM2 llama-servers on a budget-only gpu0 that holds one.

Without chromium or Playwright these tests skip, saying how to get them (`.ci/run`
installs chromium; Playwright is a dev dependency).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon, model_status, start_daemon, stop_checked, wait_for
from tests.host.fake_llama_server import config_head, fake_args, model_entry

playwright = pytest.importorskip(
    "playwright.sync_api", reason="Playwright missing: pip install -e '.[dev]'"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "NO BROWSER: the dashboard's browser tests did not run; apt-get install chromium",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, ConsoleMessage, Page, expect  # noqa: E402

DEMO_ARGS = '["--ctx-size", "2048", "--parallel", "1", "--no-warmup"]'
CONFIG = f"""
[devices.gpu0]
kind = "gpu"
memory_mb = 1000

[models.planner]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 600
args = {DEMO_ARGS}
start_timeout_s = 60

[models.coder]
gguf = "demo:smollm2"
device = "gpu0"
memory_mb = 600
args = {DEMO_ARGS}
start_timeout_s = 60

[tiers.architect]
models = ["planner"]
[tiers.builder]
models = ["coder"]
[tiers.operator]
models = ["coder"]
"""
BOUND_MS = 30_000
"""How long the page may take to show what the host did (every wait is for an event)."""

LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("dashboard")
    running = start_daemon(tmp, CONFIG)
    try:
        yield running
    finally:
        stop_checked(running)


class Watched:
    """A page, and every console error and uncaught exception it had."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def expected_errors() -> list[str]:
    """Console errors a test causes on purpose (Chromium logs every 4xx a fetch gets)."""
    return []


@pytest.fixture
def dashboard(browser: Browser, box: Daemon, expected_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    watched = Watched(context.new_page())
    watched.page.goto(box.url + "/")
    expect(watched.page.locator("body[data-loaded=true]")).to_be_attached(timeout=BOUND_MS)
    expect(watched.page.get_by_role("status", name="Live updates")).to_have_text(
        "live", timeout=BOUND_MS
    )
    try:
        yield watched.page
        unexpected = [e for e in watched.errors if not any(x in e for x in expected_errors)]
        assert unexpected == [], f"the page logged errors: {unexpected}"
    finally:
        context.close()


def put_mode(box: Daemon, mode: str) -> None:
    with box.client() as client:
        answer = client.put("/api/mode", json={"device": "gpu0", "mode": mode})
    assert answer.status_code == 200, answer.text


def modes(box: Daemon) -> dict[str, Any]:
    with box.client() as client:
        return client.get("/api/mode").json()["modes"]  # type: ignore[no-any-return]


def test_the_root_redirects_to_the_page_showing_devices_and_models(
    dashboard: Page, box: Daemon
) -> None:
    assert dashboard.url == box.url + "/ui/"
    expect(dashboard.get_by_role("article", name="device gpu0")).to_contain_text("1000 MiB")
    for name in ("planner", "coder"):
        expect(dashboard.get_by_role("row", name=name)).to_be_visible()
    expect(dashboard.get_by_label("gpu0 mode")).to_have_value("auto")


def test_a_mode_chosen_on_the_page_reaches_the_api_and_one_set_elsewhere_appears_live(
    dashboard: Page, box: Daemon
) -> None:
    try:
        dashboard.get_by_label("gpu0 mode").select_option("gaming")
        wait_for(lambda: modes(box).get("gpu0") == "gaming", "gpu0 in gaming mode")

        put_mode(box, "builder")  # from elsewhere: the CLI, another tab

        expect(dashboard.get_by_label("gpu0 mode")).to_have_value("builder", timeout=BOUND_MS)
    finally:
        put_mode(box, "auto")


def test_load_and_unload_buttons_start_and_stop_the_model(dashboard: Page, box: Daemon) -> None:
    dashboard.get_by_role("button", name="Load planner", exact=True).click()
    row = dashboard.get_by_role("row", name="planner")
    expect(row.locator(".state-ready")).to_have_text("ready", timeout=BOUND_MS)
    assert model_status(box, "planner")["state"] == "ready"

    dashboard.get_by_role("button", name="Unload planner", exact=True).click()

    expect(row.locator("td").nth(2)).to_have_text("stopped", timeout=BOUND_MS)
    assert model_status(box, "planner")["state"] == "stopped"


def test_a_load_the_mode_forbids_is_refused_with_its_reason_on_the_page(
    dashboard: Page, box: Daemon, expected_errors: list[str]
) -> None:
    expected_errors.append("status of 409")
    put_mode(box, "gaming")
    try:
        dashboard.get_by_role("button", name="Load coder", exact=True).click()
        expect(dashboard.get_by_role("alert")).to_contain_text(
            "coder cannot be loaded now: gpu0 is in gaming mode", timeout=BOUND_MS
        )
        assert model_status(box, "coder")["state"] == "stopped"
    finally:
        put_mode(box, "auto")


def test_a_route_edited_on_the_page_persists_across_a_restart(
    browser: Browser, tmp_path: Path
) -> None:
    first = start_daemon(tmp_path, CONFIG)
    try:
        page = browser.new_page()
        page.goto(first.url + "/ui/")
        choice = page.get_by_label("route for implementation")
        expect(choice).to_have_value("builder", timeout=BOUND_MS)
        choice.select_option("architect")
        with first.client() as client:
            wait_for(
                lambda: (
                    client.get("/api/routing").json()["routes"]["implementation"] == "architect"
                ),
                "the route saved",
            )
        page.close()
    finally:
        stop_checked(first)

    again = start_daemon(tmp_path, CONFIG, data_dir=first.data_dir)
    try:
        page = browser.new_page()
        page.goto(again.url + "/ui/")
        expect(page.get_by_label("route for implementation")).to_have_value(
            "architect", timeout=BOUND_MS
        )
        page.close()
    finally:
        stop_checked(again)


def test_the_page_runs_no_inline_script_and_names_are_text(box: Daemon) -> None:
    with httpx.Client(base_url=box.url) as client:
        page = client.get("/ui/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in page.text
    assert re.search(r"<[^>]*\son[a-z]+\s*=", page.text, re.IGNORECASE) is None  # no handlers


def task(box: Daemon, task_id: str) -> dict[str, Any]:
    with box.client() as client:
        answer = client.get(f"/api/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def shown_task_id(page: Page) -> str:
    heading = page.get_by_role("article", name="Task details").get_by_role("heading", level=3)
    expect(heading).to_have_text(re.compile(r"^Task \S+$"), timeout=BOUND_MS)
    return str(heading.text_content()).removeprefix("Task ")


def test_a_task_submitted_on_the_page_is_shown_through_to_done(
    dashboard: Page, box: Daemon
) -> None:
    dashboard.get_by_label("Prompt", exact=True).fill(
        "Write one line of Python that adds two numbers."
    )
    dashboard.get_by_label("Run on").select_option("model:coder")
    dashboard.get_by_label("Validation").select_option("none")
    dashboard.get_by_role("button", name="Submit", exact=True).click()

    detail = dashboard.get_by_role("article", name="Task details")
    task_id = shown_task_id(dashboard)
    expect(detail.locator("[data-status]")).to_have_text("done", timeout=120_000)
    stored = task(box, task_id)
    assert (stored["status"], stored["model"], stored["override"]) == (
        "done",
        "coder",
        {"model": "coder"},
    )
    expect(detail.locator("pre.result")).to_have_text(stored["result"])
    expect(detail.get_by_role("region", name="Why it went there")).to_contain_text("coder")
    expect(detail.get_by_role("region", name="Events")).to_contain_text("done")
    expect(dashboard.locator(f'#tasks tr[data-task="{task_id}"] .status-done')).to_have_text("done")
    expect(dashboard.get_by_label("Prompt", exact=True)).to_have_value("")


def test_a_waiting_task_is_cancelled_from_the_page_and_the_filter_shows_only_its_status(
    dashboard: Page, box: Daemon
) -> None:
    put_mode(box, "gaming")  # gpu0 takes no work: the task waits
    try:
        dashboard.get_by_label("Prompt", exact=True).fill("Plan the next release.")
        dashboard.get_by_label("Run on").select_option("model:planner")
        dashboard.get_by_role("button", name="Submit", exact=True).click()
        task_id = shown_task_id(dashboard)
        detail = dashboard.get_by_role("article", name="Task details")
        expect(detail.locator("[data-status]")).to_have_text(
            re.compile("queued|waiting_device"), timeout=BOUND_MS
        )

        detail.get_by_role("button", name="Cancel", exact=True).click()

        expect(detail.locator("[data-status]")).to_have_text("cancelled", timeout=BOUND_MS)
        assert task(box, task_id)["status"] == "cancelled"
        expect(detail.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)

        dashboard.get_by_label("Show status").select_option("cancelled")
        expect(dashboard.locator("#tasks td.status-done")).to_have_count(0, timeout=BOUND_MS)
        expect(dashboard.locator(f'#tasks tr[data-task="{task_id}"]')).to_be_visible()
        rows = dashboard.locator("#tasks tbody tr[data-task]")
        assert rows.count() == rows.locator("td.status-cancelled").count() >= 1
    finally:
        put_mode(box, "auto")


TIERS = ("architect", "builder", "operator")
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> & done'


@pytest.fixture
def hostile_box(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon whose only model (the scripted fake llama-server) answers HOSTILE."""
    head, gguf = config_head(tmp_path, 30)
    script = tmp_path / "replies.json"
    script.write_text(json.dumps([HOSTILE]))
    entry = model_entry(gguf, "cpu", 100, fake_args("ok", script=script))
    tiers = "".join(
        f'[tiers.{t}]\nmodels = ["fake"]\n' for t in ("architect", "builder", "operator")
    )
    running = start_daemon(tmp_path, f"{head}\n[models.fake]\n{entry}\n{tiers}")
    try:
        yield running
    finally:
        stop_checked(running)


def test_a_hostile_prompt_and_result_are_shown_as_text(
    browser: Browser, hostile_box: Daemon
) -> None:
    prompt = "<b>bold?</b><svg onload=window.pwned=3>"
    with hostile_box.client() as client:
        submitted = client.post("/api/tasks", json={"prompt": prompt, "validation": "none"})
    assert submitted.status_code == 201, submitted.text
    task_id = submitted.json()["id"]
    wait_for(lambda: task(hostile_box, task_id)["status"] == "done", "the task done")

    context = browser.new_context()
    try:
        watched = Watched(context.new_page())
        page = watched.page
        page.goto(hostile_box.url + "/ui/")
        page.get_by_role("button", name=f"Show task {task_id}").click()
        detail = page.get_by_role("article", name="Task details")
        expect(detail.locator("pre.result")).to_have_text(HOSTILE, timeout=BOUND_MS)
        expect(detail.get_by_role("region", name="Task prompt")).to_contain_text(prompt)
        expect(page.locator(f'#tasks tr[data-task="{task_id}"] td.prompt')).to_have_text(prompt)
        where = ("#tasks", "#task-detail", "#activity")
        made = ", ".join(f"{w} {tag}" for w in where for tag in ("img", "script", "svg", "b"))
        assert page.locator(made).count() == 0
        assert page.evaluate("window.pwned") is None
        assert watched.errors == []
    finally:
        context.close()


def routes(box: Daemon) -> dict[str, str]:
    with box.client() as client:
        return client.get("/api/routing").json()["routes"]  # type: ignore[no-any-return]


def test_a_standing_rule_is_shown_locked(dashboard: Page) -> None:
    infra = dashboard.get_by_label("route for infra")
    expect(infra).to_be_disabled()
    expect(infra).to_have_value("operator")
    expect(dashboard.get_by_role("row", name="infra")).to_contain_text("standing rule")
    expect(dashboard.get_by_label("route for review")).to_be_enabled()


def test_the_try_it_box_shows_the_decision_and_its_reasons(dashboard: Page) -> None:
    dashboard.get_by_label("Try a prompt").fill("Implement a function that parses ISO dates.")
    dashboard.get_by_role("button", name="Route it").click()

    decision = dashboard.get_by_role("region", name="Routing decision")
    expect(decision).to_contain_text("tier builder → model coder", timeout=BOUND_MS)
    expect(decision.locator("li").first).to_be_visible()


def test_the_table_exports_and_a_file_imports_and_a_bad_one_is_refused_saying_why(
    dashboard: Page, box: Daemon, tmp_path: Path, expected_errors: list[str]
) -> None:
    before = routes(box)
    with dashboard.expect_download() as download:
        dashboard.get_by_role("button", name="Export model-routing.json").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported == {"version": 1, "routes": before}

    changed = tmp_path / "model-routing.json"
    changed.write_text(json.dumps({"version": 1, "routes": {**before, "review": "builder"}}))
    try:
        dashboard.get_by_label("Import model-routing.json").set_input_files(changed)
        wait_for(lambda: routes(box)["review"] == "builder", "the imported route")
        expect(dashboard.get_by_label("route for review")).to_have_value(
            "builder", timeout=BOUND_MS
        )

        broken = tmp_path / "broken.json"
        broken.write_text('{"version": 1, "routes": {"review": }')
        dashboard.get_by_label("Import model-routing.json").set_input_files(broken)
        expect(dashboard.get_by_role("alert")).to_contain_text("is not JSON", timeout=BOUND_MS)

        expected_errors.append("status of 404")
        unknown = tmp_path / "unknown.json"
        unknown.write_text(json.dumps({"routes": {**before, "review": "nowhere"}}))
        dashboard.get_by_label("Import model-routing.json").set_input_files(unknown)
        expect(dashboard.get_by_role("alert")).to_contain_text("nowhere", timeout=BOUND_MS)
        assert routes(box)["review"] == "builder"
    finally:
        with box.client() as client:
            assert client.put("/api/routing", json={"routes": before}).status_code == 200


def test_activity_shows_each_answer_and_each_refusal_with_its_reason(
    dashboard: Page, box: Daemon
) -> None:
    with box.client(timeout=120) as client:
        answered = client.post(
            "/v1/completions",
            json={"model": "builder", "prompt": "Hi", "max_tokens": 3},
            headers={"user-agent": "curl/8.5"},
        )
        refused = client.post("/v1/completions", json={"model": "<b>nope</b>", "prompt": "Hi"})
    assert (answered.status_code, refused.status_code) == (200, 404)

    table = dashboard.locator("#activity tbody")
    served = table.get_by_role("row").filter(has_text="curl/8.5").first
    expect(served).to_contain_text("POST /v1/completions", timeout=BOUND_MS)
    expect(served).to_contain_text("builder")
    expect(served).to_contain_text("coder")
    expect(served.locator("td").nth(6)).to_have_text("200")
    miss = table.get_by_role("row").filter(has_text="<b>nope</b>").first
    expect(miss.locator("td.status-error")).to_have_text("404", timeout=BOUND_MS)
    assert dashboard.locator("#activity b").count() == 0

    speed = dashboard.get_by_role("row", name="coder").locator("td").nth(8)  # Tokens/s
    expect(speed).to_have_text(re.compile(r"^\d+\.\d$"), timeout=BOUND_MS)
    expect(dashboard.get_by_role("list", name="Swap log")).to_contain_text("coder on gpu0")
    expect(dashboard.get_by_role("img", name=re.compile("^Swap time: \\d+ values"))).to_be_visible()
    expect(
        dashboard.get_by_role("img", name=re.compile("^Tokens per second: \\d+"))
    ).to_be_visible()


def test_beyond_loopback_the_page_asks_for_the_token_once_and_then_works(
    browser: Browser, tmp_path: Path
) -> None:
    bound = start_daemon(tmp_path, '[host]\nhost = "0.0.0.0"\n' + CONFIG)
    context = browser.new_context()
    try:
        token = (bound.data_dir / "token").read_text().strip()
        watched = Watched(context.new_page())
        page = watched.page
        page.goto(bound.url + "/ui/")
        form = page.get_by_role("form", name="Token")
        expect(form).to_be_visible(timeout=BOUND_MS)
        expect(page.locator("body[data-loaded=true]")).to_have_count(0)

        page.get_by_label("its token").fill("not-the-token")
        page.get_by_role("button", name="Use token").click()
        expect(form).to_be_visible(timeout=BOUND_MS)  # asked again: the host said 401

        page.get_by_label("its token").fill(token)
        page.get_by_role("button", name="Use token").click()

        expect(page.locator("body[data-loaded=true]")).to_be_attached(timeout=BOUND_MS)
        expect(page.get_by_role("article", name="device gpu0")).to_be_visible()
        expect(page.get_by_role("status", name="Live updates")).to_have_text(
            "live", timeout=BOUND_MS
        )
        expect(form).to_be_hidden()
        page.reload()  # kept for the tab's session: not asked again
        expect(page.locator("body[data-loaded=true]")).to_be_attached(timeout=BOUND_MS)
        expect(form).to_be_hidden()
        assert all("401" in error for error in watched.errors), watched.errors
    finally:
        context.close()
        stop_checked(bound)
