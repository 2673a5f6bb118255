"""
The parameter forms of the web task manager (issue 16, "Clear actions"), in
Debian's chromium against a real C{twistd -n midjobs} (see C{test_webui.py}
for the daemon, the browser and the helpers): a method whose signature
C{core.get_methods} describes gets one labelled field a parameter; what is
filled in is exactly what the job is called with; the form and the raw JSON
carry each other's values; a required field left empty, or JSON that does not
parse, is refused before anything is sent; a method with no described
signature is given as JSON; the daemon's validation errors show at their
fields; a method's help is formatted, and markup in it stays text.

The methods are C{forms.report} and C{forms.untyped} of
C{webui_forms_services.py}.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_webui import (  # noqa: F401 (browser is a fixture)
    ADMIN,
    PHONE,
    DaemonProcess,
    Pages,
    browser,
    log_in,
    needs_chromium,
    pages_on,
    screenshot,
    wait_for_download,
)

REPORT = "forms.report"
UNTYPED = "forms.untyped"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    base = Path(tempfile.mkdtemp(prefix="mjwebforms"))
    try:
        running = DaemonProcess(base, base / "s.sock", "webui_forms_services")
        try:
            running.create_user(ADMIN, ["FULL_ADMIN"])
            yield running
        finally:
            running.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def job_count(daemon: DaemonProcess) -> int:
    count: int = daemon.call(ADMIN, "core.get_jobs", [], {"count": True})
    return count


def arguments_of(daemon: DaemonProcess, job_id: int) -> Any:
    return daemon.call(ADMIN, "core.get_jobs", [["id", "=", job_id]], {"get": True})["arguments"]


def open_download(page: Any, method: str) -> None:
    from playwright.sync_api import expect

    log_in(page, ADMIN)
    page.get_by_role("link", name="Download").click()
    expect(page.get_by_role("heading", name="Download")).to_be_focused()
    page.locator("#download-method").select_option(method)


def form(page: Any) -> Any:
    return page.locator("#download-params-form")


def fill_report(page: Any) -> None:
    """
    Fill in every parameter of C{forms.report}, with the keyboard's labels.
    """
    box = form(page)
    box.get_by_label("title").fill("Quarterly <b>figures</b>")
    box.get_by_label("copies").fill("3")
    box.get_by_label("scale").fill("2.5")
    box.get_by_label("draft").check()
    box.get_by_label("note is null").check()
    box.get_by_label("options").fill('{"depth": 2, "tags": ["a"]}')


FILLED = ["Quarterly <b>figures</b>", 3, 2.5, True, None, {"depth": 2, "tags": ["a"]}]


@needs_chromium
def test_a_described_signature_is_a_form_and_runs_with_exactly_its_values(
    daemon: DaemonProcess, pages: Pages
) -> None:
    from playwright.sync_api import expect

    page = pages()
    open_download(page, REPORT)
    box = form(page)
    expect(box).to_be_visible()
    expect(page.locator("#download-params")).to_be_hidden()
    toggle = page.get_by_role("button", name="Edit as JSON")
    expect(toggle).to_have_attribute("aria-pressed", "false")

    # One labelled field a parameter, each with the control its type calls for.
    controls = box.locator("input:not(.null-box), select, textarea")
    expect(controls).to_have_count(6)
    kinds = box.evaluate(
        """box => [...box.querySelectorAll("input:not(.null-box), select, textarea")].map(c => ({
            label: c.labels[0].textContent, tag: c.tagName.toLowerCase(), type: c.type, step: c.step || null,
            required: c.getAttribute("aria-required"), described: c.getAttribute("aria-describedby")
        }))"""
    )
    assert [(k["label"], k["tag"], k["type"], k["step"], k["required"]) for k in kinds] == [
        ("title", "input", "text", None, "true"),
        ("copies", "input", "number", "1", "true"),
        ("scale (optional)", "input", "number", "any", None),
        # Its default (false) is known: a check box.
        ("draft (optional)", "input", "checkbox", None, None),
        ("note (optional)", "input", "text", None, None),
        ("options (optional) (JSON)", "textarea", "textarea", None, None),
    ]
    assert all(k["described"] for k in kinds)
    expect(box.get_by_label("copies").locator("xpath=ancestor::div[contains(@class,'field')][1]")).to_contain_text(
        "integer"
    )
    expect(box.get_by_label("note is null")).to_be_visible()
    expect(box.get_by_label("draft")).not_to_be_checked()
    expect(box.get_by_label("scale")).to_have_attribute("placeholder", "1")

    # Filled in and sent: the job has exactly those arguments.
    fill_report(page)
    page.get_by_label("Save as").fill("report.txt")
    name, saved = wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    assert name == "report.txt"
    assert saved.decode().splitlines() == [f"Quarterly <b>figures</b> {i} 2.5" for i in (1, 2, 3)]
    job_id = int(page.locator("#download-job").get_attribute("data-job-id"))
    assert arguments_of(daemon, job_id) == FILLED
    screenshot(page, "form", full_page=True)

    # Optional parameters left empty at the end are left out of the call.
    box.get_by_label("note is null").uncheck()
    box.get_by_label("options").fill("")
    box.get_by_label("draft").uncheck()
    box.get_by_label("scale").fill("")
    _, saved = wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    assert arguments_of(daemon, int(page.locator("#download-job").get_attribute("data-job-id"))) == [
        "Quarterly <b>figures</b>", 3
    ]


@needs_chromium
def test_the_form_and_the_json_carry_each_others_values(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    open_download(page, REPORT)
    fill_report(page)
    toggle = page.get_by_role("button", name="Edit as JSON")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    text = page.locator("#download-params")
    expect(text).to_be_visible()
    expect(form(page)).to_be_hidden()
    assert json.loads(text.input_value()) == FILLED

    # Changed as JSON, then back to the form: the form shows the change and keeps the rest.
    changed = [*FILLED[:1], 7, 0.5, False, "a note"]
    text.fill(json.dumps(changed))
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    box = form(page)
    expect(box.get_by_label("title")).to_have_value("Quarterly <b>figures</b>")
    expect(box.get_by_label("copies")).to_have_value("7")
    expect(box.get_by_label("scale")).to_have_value("0.5")
    expect(box.get_by_label("draft")).not_to_be_checked()
    expect(box.get_by_label("note", exact=False).first).to_have_value("a note")
    expect(box.get_by_label("note is null")).not_to_be_checked()
    expect(box.get_by_label("options")).to_have_value("")
    # And to JSON once more: the same array.
    toggle.click()
    assert json.loads(text.input_value()) == changed

    # JSON that does not parse is said at once, keeps the JSON, and is never sent.
    before = job_count(daemon)
    text.fill('["Quarterly", 3,')
    expect(page.locator("#download-params-json-error")).to_contain_text("not valid JSON")
    expect(text).to_have_attribute("aria-invalid", "true")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#download-params-json-error")).to_contain_text("The form shows it once it is")
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.locator("#download-error")).to_contain_text("not valid JSON")
    # Values the form cannot show keep the JSON too, and say which.
    text.fill('["t", "three"]')
    expect(page.locator("#download-params-json-error")).to_have_text("")
    toggle.click()
    expect(page.locator("#download-params-json-error")).to_contain_text("copies must be a whole number")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert job_count(daemon) == before

    # Each method keeps what was typed for it.
    text.fill('["kept", 1]')
    page.locator("#download-method").select_option(UNTYPED)
    page.locator("#download-method").select_option(REPORT)
    expect(text).to_have_value('["kept", 1]')


@needs_chromium
def test_a_required_field_left_empty_is_refused_before_sending(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    open_download(page, REPORT)
    before = job_count(daemon)
    box = form(page)
    box.get_by_label("copies").fill("2")
    box.get_by_label("options").fill("[1]")
    page.get_by_role("button", name="Download", exact=True).click()
    title = box.get_by_label("title")
    expect(title).to_be_focused()
    expect(title).to_have_attribute("aria-invalid", "true")
    error = page.locator(f"#{title.get_attribute('id')}-error")
    expect(error).to_have_text("Required")
    # The error is part of the field's description, for a screen reader.
    assert f"{title.get_attribute('id')}-error" in title.get_attribute("aria-describedby").split()
    expect(box.locator(".field-error:visible")).to_have_count(2)
    expect(box.locator(".json-field .field-error")).to_have_text("Must be a JSON object or null")
    expect(page.locator("#download-error")).to_have_text("Some parameters need attention: title, options.")

    assert job_count(daemon) == before

    # Parameters are positional: those left empty before one given take the defaults the daemon describes.
    title.fill("t")
    box.get_by_label("options").fill('{"a": 1}')
    wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    assert arguments_of(daemon, int(page.locator("#download-job").get_attribute("data-job-id"))) == [
        "t", 2, 1.0, False, None, {"a": 1}
    ]


@needs_chromium
def test_a_method_without_a_described_signature_is_given_as_json(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    open_download(page, UNTYPED)
    expect(page.locator("#download-params-note")).to_have_text(
        "This method does not describe its parameters: give them as a JSON array."
    )
    expect(page.get_by_role("button", name="Edit as JSON")).to_be_hidden()
    expect(form(page)).to_be_hidden()
    text = page.locator("#download-params")
    expect(text).to_be_visible()
    text.fill('[{"any": ["thing"]}, 2]')
    _, saved = wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    assert saved == b"[{'any': ['thing']}, 2]"
    job_id = int(page.locator("#download-job").get_attribute("data-job-id"))
    assert arguments_of(daemon, job_id) == [{"any": ["thing"]}, 2]


@needs_chromium
def test_the_daemons_validation_errors_show_at_their_fields(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    open_download(page, REPORT)
    box = form(page)
    # The job refuses them (errors named "forms.report.copies", "forms.report.scale").
    box.get_by_label("title").fill("t")
    box.get_by_label("copies").fill("-1")
    box.get_by_label("scale").fill("0")
    page.get_by_role("button", name="Download", exact=True).click()
    copies, scale = box.get_by_label("copies"), box.get_by_label("scale")
    expect(page.locator(f"#{copies.get_attribute('id')}-error")).to_have_text("Must be 0 or more")
    expect(page.locator(f"#{scale.get_attribute('id')}-error")).to_have_text("Must not be zero")
    expect(copies).to_have_attribute("aria-invalid", "true")
    expect(copies).to_be_focused()
    expect(page.locator("#download-error")).to_have_text(
        "The download failed: the daemon refused the parameters marked."
    )
    expect(page.locator("#download-job .state")).to_have_text("Failed")
    screenshot(page, "form-errors")

    # Sent again right: the marks go.
    copies.fill("1")
    scale.fill("")
    wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    expect(box.locator(".field-error:visible")).to_have_count(0)
    expect(copies).not_to_have_attribute("aria-invalid", "true")

    # The call's own check (its signature's types), given as JSON: the error names the parameter.
    page.get_by_role("button", name="Edit as JSON").click()
    page.locator("#download-params").fill('["t", "three"]')
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.locator("#download-error")).to_have_text(
        "Could not start the download: the daemon refused copies: Not a valid integer."
    )


@needs_chromium
def test_an_uploads_validation_errors_show_at_their_fields(
    daemon: DaemonProcess, pages: Pages, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 2000)
    page = pages()
    log_in(page, ADMIN)
    page.get_by_role("link", name="Upload").click()
    page.locator("#upload-method").select_option("forms.store")
    box = page.locator("#upload-params-form")
    box.get_by_label("name").fill("not a name")
    box.get_by_label("limit").fill("100")
    page.get_by_label("Files (one to five)").set_input_files(str(data))
    # The job fails while the upload comes in: the upload is refused (the browser logs the 412 itself).
    pages.allowed = (r"status of 412",)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-error")).to_have_text(
        "The daemon refused the upload (HTTP 412): see the parameters marked."
    )
    name, limit = box.get_by_label("name"), box.get_by_label("limit")
    expect(page.locator(f"#{name.get_attribute('id')}-error")).to_have_text("Must be a plain name")
    expect(page.locator(f"#{limit.get_attribute('id')}-error")).to_have_text("Smaller than the upload (2000 bytes)")
    expect(name).to_be_focused()
    failed = daemon.call(ADMIN, "core.get_jobs", [["method", "=", "forms.store"]], {"get": True})
    assert (failed["state"], failed["arguments"]) == ("FAILED", ["not a name", 100])

    # Right the second time: the job succeeds and the marks go.
    name.fill("data")
    limit.fill("5000")
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-job .state")).to_have_text("Success")
    expect(box.locator(".field-error:visible")).to_have_count(0)
    assert arguments_of(daemon, int(page.locator("#upload-job").get_attribute("data-job-id"))) == ["data", 5000]


@needs_chromium
def test_the_help_is_formatted_and_its_markup_stays_text(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    open_download(page, REPORT)
    doc = page.locator("#download-method-doc")
    expect(doc.locator("p")).to_have_count(3)
    expect(doc.locator("p").first).to_have_text("Write a small report: copies lines of title.")
    expect(doc.locator("ul > li")).to_have_count(3)
    expect(doc.locator("ul > li").nth(1)).to_have_text("its copy number, from 1;")
    assert doc.locator("code").all_text_contents() == ["copies", "title", "1", "scale", "copies", "scale"]
    expect(doc.locator("strong")).to_have_text("zero")
    expect(doc).not_to_contain_text("C{")

    page.locator("#download-method").select_option(UNTYPED)
    expect(doc).to_contain_text('<img src=x onerror="window.injected = 1"> and <b>bold</b>.')
    expect(doc.locator("img, b")).to_have_count(0)
    assert page.evaluate("window.injected") is None
    expect(doc.locator("code")).to_have_text("first")


@needs_chromium
def test_epytext_fields_numbered_lists_and_literal_blocks(daemon: DaemonProcess, pages: Pages) -> None:
    """
    The other blocks a docstring has: numbered lists, a literal block after
    C{::}, epytext fields, nested braces in C{C{...}}.
    """
    page = pages()
    log_in(page, ADMIN)
    shape = page.evaluate(
        """async (text) => {
            const { renderDoc } = await import("/static/js/doctext.js");
            const box = document.createElement("div");
            box.append(renderDoc(text));
            return [...box.children].map(e => [e.tagName.toLowerCase(), [...e.children].map(c => c.tagName.toLowerCase()),
                e.textContent]);
        }""",
        "Run it in three steps:\n"
        "1. read C{{\"percent\": 0}};\n"
        "2. wait,\n"
        "   a line that goes on;\n"
        "3. write.\n"
        "\n"
        "For example::\n"
        "\n"
        "    midclt call --job x '[1]'\n"
        "      <indented>\n"
        "\n"
        "@param path: where it goes, as C{/a/b}.\n"
        "@return: the size.\n",
    )
    assert shape == [
        ["p", [], "Run it in three steps:"],
        ["ol", ["li", "li", "li"], 'read {"percent": 0};wait, a line that goes on;write.'],
        ["p", [], "For example:"],
        ["pre", [], "midclt call --job x '[1]'\n  <indented>"],
        ["dl", ["dt", "dd", "dt", "dd"], "Parameter pathwhere it goes, as /a/b.Returnsthe size."],
    ]


@needs_chromium
def test_a_json_schema_description_gets_choices_groups_and_list_editors(daemon: DaemonProcess, pages: Pages) -> None:
    """
    What C{core.get_methods} may describe beyond types (choices, defaults,
    an object's members, an array's items) gets its own controls: the form
    built in the page from such a description, filled with the keyboard.
    """
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    page.evaluate(
        """async () => {
            const { ParamsForm } = await import("/static/js/paramform.js");
            const { parametersOf } = await import("/static/js/schema.js");
            const form = new ParamsForm(parametersOf([
                {name: "level", required: true, schema: {enum: ["low", "high"]}},
                {name: "target", required: true, schema: {type: "object", required: ["host"], properties: {
                    host: {type: "string", description: "A name or an address"},
                    port: {type: "integer", default: 22},
                }}},
                {name: "paths", required: false, schema: {type: "array", items: {type: "string"}}},
                {name: "retries", required: false, type: "integer", default: 3},
                {name: "dry_run", required: false, type: "boolean", default: false},
            ]), "t");
            // Beside the page's views, which go on living (the list's counts may still come in).
            const holder = document.createElement("section");
            holder.id = "test-form";
            holder.append(form.root);
            document.getElementById("main").prepend(holder);
            window.testForm = form;
        }"""
    )
    main = page.locator("#test-form")
    expect(main.get_by_label("level")).to_have_js_property("tagName", "SELECT")
    expect(main.get_by_role("group", name="target")).to_be_visible()
    expect(main.get_by_label("host")).to_have_attribute("aria-required", "true")
    expect(main.get_by_label("port")).to_have_attribute("placeholder", "22")
    expect(main.get_by_label("dry_run")).to_have_js_property("type", "checkbox")

    read = "() => { const r = window.testForm.read(); return [r.params, r.problems.map(p => [p.field.path, p.message])]; }"
    # Nothing filled: the required ones say so.
    assert page.evaluate(read) == [[None, {}], [["level", "Required"], ["target.host", "Required"]]]

    main.get_by_label("level").select_option("high")
    main.get_by_label("host").fill("backup.example")
    paths = main.get_by_role("group", name="paths")
    paths.get_by_role("button", name="Add to paths").click()
    expect(main.get_by_label("paths 1", exact=True)).to_be_focused()
    page.keyboard.type("/a")
    paths.get_by_role("button", name="Add to paths").click()
    page.keyboard.type("/b")
    paths.get_by_role("button", name="Add to paths").click()
    page.keyboard.type("/c")
    paths.get_by_role("button", name="Remove paths 2").click()
    expect(main.get_by_label("paths 2", exact=True)).to_have_value("/c")
    main.get_by_label("dry_run").check()
    # The gap before dry_run takes retries' default; port, left empty, is left out.
    assert page.evaluate(read) == [["high", {"host": "backup.example"}, ["/a", "/c"], 3, True], []]

    # Written back from values, and an error's path finds its field.
    page.evaluate(
        """() => {
            window.testForm.write(["low", {"host": "h", "port": 2222}, ["/x"]]);
            window.testForm.fieldAt("target.port").setError("Not open");
            window.testForm.fieldAt("paths.0").setError("No such path");
        }"""
    )
    expect(main.get_by_label("port")).to_have_value("2222")
    expect(main.get_by_label("dry_run")).not_to_be_checked()
    expect(main.get_by_role("group", name="target")).to_contain_text("Not open")
    expect(main.get_by_role("group", name="paths")).to_contain_text("No such path")
    assert page.evaluate(read) == [["low", {"host": "h", "port": 2222}, ["/x"]], []]


@needs_chromium
def test_the_form_at_phone_width(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages(PHONE)
    open_download(page, REPORT)
    fill_report(page)
    box = form(page)
    expect(box.get_by_label("options")).to_be_visible()
    # Nothing is wider than the screen.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    screenshot(page, "form-phone", full_page=True)
    assert re.match(r"Parameters of forms\.report\(", page.locator("#download-params-hint").inner_text())
