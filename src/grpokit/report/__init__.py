"""The run report: one self-contained HTML file per run or set of runs
(`grpokit report RUN_DIR ...`), and groups.jsonl, what the grouper did each step."""
from grpokit.report.groups import GROUPS, GroupLog, group_record
from grpokit.report.hook import RunReporter
from grpokit.report.page import REPORT, build_html, embed_json, report_data, write_report
from grpokit.report.runs import config_diff, load_run, sample_view, segments

__all__ = ["GROUPS", "REPORT", "GroupLog", "RunReporter", "build_html", "config_diff", "embed_json", "group_record", "load_run",
           "report_data", "sample_view", "segments", "write_report"]
