"""The report in a real browser (headless Chromium over the DevTools protocol): plots
drawn with data, the completion table filled, filters that work by typing and choosing,
a screenshot that is not blank. Marked `browser`; skipped where Chromium is missing
(`.ci/run` installs it)."""
import io

import pytest

from chromium_client import Chromium, find_chromium
from grpokit.report import write_report
from report_runs import write_run

pytestmark = pytest.mark.browser

ROWS = "document.querySelectorAll('#samples-table tbody tr').length"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set GRPOKIT_CHROMIUM)")
    d = tmp_path_factory.mktemp("runs")
    report = write_report([write_run(d / "a", steps=5), write_run(d / "b", steps=3, lr=3e-4, tools=False)],
                          d / "report.html")
    browser = Chromium(binary)
    browser.open(report.resolve().as_uri())
    yield browser
    browser.close()


def test_plots_render_with_data(page):
    n_series = page.eval("document.querySelectorAll('svg.plot path.series').length")
    assert n_series >= 20
    # every drawn line has points inside the plot area, not an empty path
    bad = page.eval("""[...document.querySelectorAll('svg.plot path.series')].filter(p => {
        const d = p.getAttribute('d'); const b = p.getBBox();
        return !d || !/^M[0-9.]+,[0-9.]+/.test(d) || !(b.width > 0 || b.height >= 0) }).length""")
    assert bad == 0
    # the reward panel overlays both runs, with their points
    assert page.eval("""(() => { const t = [...document.querySelectorAll('svg.plot')].find(s =>
        s.querySelector('.ptitle').textContent === 'reward');
        return [t.querySelectorAll('path.series').length, t.querySelectorAll('circle.pt').length] })()""") == [2, 8]
    assert page.eval("document.querySelectorAll('svg.plot path.area').length") == 8  # 2 runs x 4 parts
    assert page.eval("document.querySelectorAll('svg.plot rect.bar').length") >= 2  # group sizes
    assert page.eval("document.querySelector('#config-diff').textContent.includes('optim.lr')")


def test_completion_table_and_filters(page):
    page.eval("document.getElementById('f-text').value = ''; document.getElementById('f-step').selectedIndex = 0;"
              "document.getElementById('f-step').dispatchEvent(new Event('change'))")
    assert page.eval(ROWS) == 16  # (5 + 3 steps) x 2 samples
    # hostile model text is shown as text, not run
    assert page.eval("window.pwned === undefined && document.querySelectorAll('#samples-table img').length === 0")
    assert page.eval("document.querySelectorAll('#samples-table .seg.call').length") == 5  # run b has no tools
    assert page.eval("document.querySelectorAll('#samples-table ol.steps li.bad').length") == 8
    # typing in the search box
    page.eval("document.getElementById('f-text').focus()")
    page.type_text("2+12 is 14")
    assert page.eval(ROWS) == 8  # the correct sample of each step of both runs
    assert page.eval("document.getElementById('count').textContent") == "8 of 16 completions"
    # choosing a step with the keyboard: the first step after "all steps"
    page.eval("document.getElementById('f-text').value = ''; document.getElementById('f-text')"
              ".dispatchEvent(new Event('input')); document.getElementById('f-step').focus()")
    page.press("ArrowDown", "ArrowDown", 40)
    assert page.eval("document.getElementById('f-step').value") == "1"
    assert page.eval(ROWS) == 4
    assert page.eval("[...document.querySelectorAll('#samples-table tbody tr')].every(r => r.cells[1].textContent === '1')")


def test_screenshot_is_not_blank(page):
    from PIL import Image

    png = page.screenshot()
    img = Image.open(io.BytesIO(png)).convert("L")
    hist = img.histogram()  # count of each grey level 0..255
    n = sum(hist)
    mean = sum(i * c for i, c in enumerate(hist)) / n
    variance = sum(c * (i - mean) ** 2 for i, c in enumerate(hist)) / n
    assert img.size[0] >= 800
    assert variance > 100, variance  # a blank page is one colour: variance 0
