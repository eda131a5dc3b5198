"""The usage page (`/ui/`) in a real browser: served by the gateway with a strict
policy, signed in with an rcv_ key kept in the tab's session storage only, showing
the numbers the API returns for traffic the test sent, verifying a receipt with Web
Crypto's Ed25519 (and failing a tampered one), and refusing a wrong key clearly.
Admin panels are the API's to refuse: a member key sees the 403 said in words."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from recovea_proxy.meter import verify
from recovea_proxy.ui import CSP
from tests.browser_support import (
    WAIT_S,
    chrome,
    console,
    keep_screenshot,
    unexpected,
    wait_for,
)
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, cli_json

TOKENS = {"x-mock-input-tokens": "1000", "x-mock-cached-tokens": "0", "x-mock-output-tokens": "50"}
METRICS = (
    "requests",
    "errors",
    "cache_hits",
    "dedup_hits",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "unpriced",
    "baseline_cost_usd",
    "realized_cost_usd",
    "savings_usd",
)


class Workspace:
    """A workspace with an admin and a member key and known traffic: chat calls with
    features and end users, a repeated deterministic call (a cache hit), a provider
    error; stored and rolled up."""

    def __init__(self, gateway: Gateway, env: dict[str, str]) -> None:
        self.member = make_tenant(env, "ui-page")
        created = cli_json(
            "key", "create", "--workspace", self.member.workspace, "--role", "admin", env=env
        )
        self.admin = Tenant(self.member.workspace, created["key"], created["key_id"])
        self.gateway = gateway
        sent = [
            self.call(self.admin, "gpt-4o", "hello", feature="chat", user="ann"),
            self.call(self.admin, "gpt-4o-mini", "hi", feature="summary", user="bob"),
            self.call(self.member, "gpt-4o", "same", temperature=0),
            self.call(self.member, "gpt-4o", "same", temperature=0),
            self.call(self.member, "gpt-4o", "oops", fault="400"),
        ]
        for request_id in sent:
            stored(gateway, self.member, "requests", request_id)
        cli_json("rollup", env=env)

    def call(
        self,
        key: Tenant,
        model: str,
        text: str,
        *,
        fault: str = "",
        temperature: float = 1,
        feature: str = "",
        user: str = "",
    ) -> str:
        headers = {**key.bearer, **TOKENS}
        for name, value in (
            ("x-mock-fault", fault),
            ("x-recovea-feature", feature),
            ("x-recovea-customer", user),
        ):
            if value:
                headers[name] = value
        response = httpx.post(
            f"{self.gateway.url}/v1/chat/completions",
            json={
                "model": model,
                "temperature": temperature,
                "messages": [{"role": "user", "content": f"ui {text}"}],
            },
            headers=headers,
            timeout=30,
        )
        assert response.status_code == (400 if fault else 200), response.text
        return response.headers["x-request-id"]

    def api(self, path: str, key: Tenant | None = None, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.gateway.url}{path}", params=params, headers=(key or self.admin).bearer
        )


@pytest.fixture(scope="module")
def workspace(gateway: Gateway, db_env: dict[str, str]) -> Workspace:
    return Workspace(gateway, db_env)


def sign_in(driver: WebDriver, gateway: Gateway, key: str) -> None:
    driver.get(f"{gateway.url}/ui/")
    field = wait_for(driver, "#key-input")
    field.send_keys(key)
    driver.find_element(By.ID, "sign-in-button").click()


def ready(driver: WebDriver) -> dict[str, str]:
    """Wait until every panel has loaded; the period the page asked the API for."""
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "dashboard").get_attribute("data-state") == "ready",
        "the dashboard to load",
    )
    dashboard = driver.find_element(By.ID, "dashboard")
    return {
        "from": str(dashboard.get_attribute("data-from")),
        "to": str(dashboard.get_attribute("data-to")),
    }


def storage(driver: WebDriver) -> dict[str, Any]:
    found: dict[str, Any] = driver.execute_script(
        "return {session: sessionStorage.getItem('recovea.key'), local: localStorage.length,"
        " cookie: document.cookie, url: location.href}"
    )
    return found


def test_the_page_is_served_with_a_strict_policy(gateway: Gateway) -> None:
    """`/ui/` and its files come from the gateway with their content types, a CSP that
    allows this origin only and no inline script or style, nosniff and an ETag; the
    HTML holds no inline script, and an unknown file is a 404."""
    page = httpx.get(f"{gateway.url}/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe" not in CSP and "http" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    again = httpx.get(f"{gateway.url}/ui/", headers={"if-none-match": page.headers["etag"]})
    assert again.status_code == 304
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts and all('src="' in tag for tag in scripts)
    assert "style=" not in page.text and "<style" not in page.text
    for name in re.findall(r'(?:src|href)="([a-z]+\.(?:js|css|svg))"', page.text):
        served = httpx.get(f"{gateway.url}/ui/{name}")
        assert served.status_code == 200, name
        assert served.headers["x-content-type-options"] == "nosniff"
    assert (
        httpx.get(f"{gateway.url}/ui/app.js").headers["content-type"].startswith("text/javascript")
    )
    assert httpx.get(f"{gateway.url}/ui/nothing.js").status_code == 404
    moved = httpx.get(f"{gateway.url}/ui")
    assert (moved.status_code, moved.headers["location"]) == (308, "/ui/")


def cards(driver: WebDriver) -> dict[str, str | None]:
    return {
        str(card.get_attribute("data-metric")): card.get_attribute("data-value")
        for card in driver.find_elements(By.CSS_SELECTOR, "#summary-cards .card")
    }


def breakdown(driver: WebDriver, group: str) -> dict[str, int]:
    rows = driver.find_elements(By.CSS_SELECTOR, f'[data-group="{group}"] tbody tr')
    return {
        str(r.get_attribute("data-key")): int(r.get_attribute("data-requests") or 0) for r in rows
    }


def api_groups(workspace: Workspace, group: str, window: dict[str, str]) -> dict[str, int]:
    usage = workspace.api("/v1/recovea/usage", group_by=group, **window).json()
    return {row["key"] or "": row["requests"] for row in usage["data"]}


def check_figures(driver: WebDriver, workspace: Workspace, window: dict[str, str]) -> None:
    """The cards and breakdowns hold the API's figures for the page's own period."""
    totals = workspace.api("/v1/recovea/usage", group_by="model", **window).json()["totals"]
    assert totals["requests"] == 5 and totals["cache_hits"] == 1 and totals["errors"] == 1
    shown = cards(driver)
    for metric in METRICS:
        expected = totals[metric]
        assert shown[metric] == (None if expected is None else str(expected)), metric
    for group in ("model", "feature", "end_user", "route", "key"):
        assert breakdown(driver, group) == api_groups(workspace, group, window), group
    key_names = driver.find_element(By.CSS_SELECTOR, '[data-group="key"] tbody').text
    assert f"…{workspace.admin.key[-4:]} (admin, live)" in key_names
    assert workspace.admin.key not in driver.page_source


def check_latest(driver: WebDriver, workspace: Workspace, window: dict[str, str]) -> str:
    """The latest requests are the API's rows; one's receipt verifies in the page."""
    listed = workspace.api("/v1/recovea/requests", **window, limit=50).json()["data"]
    rows = driver.find_elements(By.CSS_SELECTOR, "#requests tbody tr")
    assert [r.get_attribute("data-request-id") for r in rows] == [x["request_id"] for x in listed]
    newest = rows[0]
    newest.find_element(By.CSS_SELECTOR, "button.verify").click()
    result = newest.find_element(By.CSS_SELECTOR, ".verify-result")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: result.get_attribute("data-verified") in ("ok", "failed"), "verification"
    )
    assert result.get_attribute("data-verified") == "ok", result.text
    assert "receipt OK" in result.text
    assert "ledger row: ok" in result.text and "chain link: ok" in result.text
    receipt = workspace.api(f"/v1/recovea/receipts/{listed[0]['request_id']}").json()
    assert receipt["token"] in str(result.get_attribute("textContent"))
    return str(receipt["token"])


def tampered(token: str) -> str:
    """The token with its output_tokens changed: still canonical, no longer signed."""
    payload = verify.decode_token(token).payload
    payload["output_tokens"] = (payload["output_tokens"] or 0) + 1
    body = verify.canonical_json(payload)
    encoded = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return encoded + "." + token.split(".")[1]


def page_verify(driver: WebDriver, token: str) -> dict[str, Any]:
    """The page's own verify function (its module, imported as the page imports it)
    on a token, against the gateway's published keys."""
    result: dict[str, Any] = driver.execute_async_script(
        "const [token, done] = arguments;"
        "Promise.all([import('/ui/verify.js'), import('/ui/api.js')])"
        ".then(async ([v, api]) => done(await v.verifyReceipt(token, await api.receiptKeys())))"
        ".catch((e) => done({ok: null, error: String(e)}));",
        token,
    )
    return result


def test_signed_in_the_page_shows_what_the_api_returns(
    gateway: Gateway, workspace: Workspace, tmp_path: Path
) -> None:
    """An admin signs in: the cards, breakdowns and latest requests hold the API's
    figures for the page's period, a receipt verifies and a tampered one does not, the
    key is only in session storage, the console is clean, and signing out forgets it."""
    with chrome() as driver:
        sign_in(driver, gateway, workspace.admin.key)
        window = ready(driver)
        check_figures(driver, workspace, window)
        token = check_latest(driver, workspace, window)
        good = page_verify(driver, token)
        assert good["ok"] is True, good
        bad = page_verify(driver, tampered(token))
        assert bad["ok"] is False
        assert bad["error"].startswith("signature does not verify with key rk_"), bad
        cut = page_verify(driver, token[:-2])
        assert (cut["ok"], cut["error"]) == (False, "token signature is not 64 bytes"), cut
        caps = driver.find_element(By.ID, "caps-body").text
        caps_status = workspace.api("/admin/v1/caps").status_code
        if caps_status == 404:
            assert "Not available: this gateway has no spend caps API (404)." in caps
        else:
            assert caps_status == 200 and "Not available" not in caps
        reconciliation = driver.find_element(By.ID, "reconciliation-body").text
        assert "No provider usage reports for this period" in reconciliation
        kept = storage(driver)
        assert kept["session"] == workspace.admin.key
        assert (kept["local"], kept["cookie"]) == (0, "")
        assert workspace.admin.key not in kept["url"]
        keep_screenshot(driver, tmp_path, "ui-usage-page.png")
        assert unexpected(console(driver), ("/admin/v1/caps", 404)) == []
        driver.find_element(By.ID, "sign-out").click()
        wait_for(driver, "#key-input")
        assert storage(driver)["session"] is None
        assert driver.find_element(By.ID, "requests-table").text == ""


def test_a_member_key_is_refused_the_admin_panels_by_the_api(
    gateway: Gateway, workspace: Workspace
) -> None:
    """A member key sees its workspace's usage; the caps panel says the API refused it
    (403) and why, and keys show as ids, not as their last four."""
    with chrome() as driver:
        sign_in(driver, gateway, workspace.member.key)
        ready(driver)
        assert workspace.api("/admin/v1/keys", workspace.member).status_code == 403
        caps = driver.find_element(By.ID, "caps-body").text
        if workspace.api("/admin/v1/caps", workspace.member).status_code == 403:
            refused = "Not available: the spend caps panel needs an admin key (the API answered 403"
            assert refused in caps
        else:
            assert "no spend caps API (404)" in caps
        keys = driver.find_element(By.CSS_SELECTOR, '[data-group="key"]').text
        assert "an admin key shows each key's last four characters" in keys
        assert workspace.admin.key[-4:] + " (admin" not in keys
        allowed = (("/admin/v1/caps", 403), ("/admin/v1/caps", 404), ("/admin/v1/keys", 403))
        assert unexpected(console(driver), *allowed) == []


def test_a_wrong_key_is_told_so_and_not_kept(gateway: Gateway) -> None:
    """A key the gateway does not know: the API's 401 message on the page, nothing in
    session storage, no dashboard."""
    with chrome() as driver:
        sign_in(driver, gateway, "rcv_live_" + "x" * 43)
        message = wait_for(driver, "#sign-in-error")
        assert message.text.startswith("Sign-in failed: Invalid API key.")
        assert storage(driver)["session"] is None
        assert not driver.find_element(By.ID, "dashboard").is_displayed()
        assert unexpected(console(driver), ("/v1/recovea/ledger", 401)) == []


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def altered(token: str) -> dict[str, str]:
    """Ways a token can be wrong, each made from a real one."""
    payload, signature = verify.decode_token(token).payload, token.split(".")[1]

    def signed_as(changes: dict[str, Any], drop: str = "") -> str:
        changed = {k: v for k, v in {**payload, **changes}.items() if k != drop}
        return b64(verify.canonical_json(changed)) + "." + signature

    spaced = b64(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).replace(b",", b", "))
    return {
        "edited": signed_as({"output_tokens": (payload["output_tokens"] or 0) + 1}),
        "unknown kid": signed_as({"kid": "rk_0000000000000000"}),
        "missing field": signed_as({}, drop="prev"),
        "extra field": signed_as({"extra": 1}),
        "wrong type": signed_as({"seq": "1"}),
        "not canonical": spaced + "." + signature,
        "bad base64": "!" + token,
        "no dot": token.replace(".", ""),
        "short signature": token[:-4],
    }


def python_verdict(token: str, keys: verify.KeySet) -> str | None:
    """What `recovea verify-receipt` says of a token (None: it verifies)."""
    try:
        verify.check_signature(verify.decode_token(token), keys)
    except verify.VerifyError as exc:
        return str(exc)
    return None


def test_the_page_and_the_command_agree_on_every_altered_token(
    gateway: Gateway, workspace: Workspace
) -> None:
    """The page's verifier and the Python one (`recovea verify-receipt`) give the same
    verdict and the same message on a real receipt and on each way of altering it."""
    listed = workspace.api("/v1/recovea/requests", limit=1).json()["data"]
    token = workspace.api(f"/v1/recovea/receipts/{listed[0]['request_id']}").json()["token"]
    keys = verify.load_keys(httpx.get(f"{gateway.url}/.well-known/recovea-receipt-keys").content)
    with chrome() as driver:
        driver.get(f"{gateway.url}/ui/")
        wait_for(driver, "#key-input")
        assert page_verify(driver, token)["ok"] is True and python_verdict(token, keys) is None
        for what, bad in altered(token).items():
            expected = python_verdict(bad, keys)
            assert expected is not None, what
            assert (what, page_verify(driver, bad)) == (
                what,
                {
                    "ok": False,
                    "error": expected,
                    "lines": [[_step(expected), f"FAILED: {expected}"]],
                },
            )
        assert unexpected(console(driver)) == []


def _step(message: str) -> str:
    """The check the page names for a failure: decoding, or the signature."""
    at_signature = message.startswith(("signature does not verify", "no key"))
    return "signature" if at_signature else "token"
