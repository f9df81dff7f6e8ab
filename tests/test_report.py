"""pckeypoints.evaluation.report.markdown_table: the one markdown table of the reports and the benchmarks."""
from pckeypoints.evaluation.report import markdown_table


def test_markdown_table_aligned_and_compact_by_hand():
    rows = [["pck", 0.51234], ["note", ""], ["ece", float("nan")]]
    assert markdown_table(["metric", "value"], rows) == (
        "| metric | value  |\n|--------|--------|\n| pck    | 0.5123 |\n| note   |        |\n| ece    | n/a    |\n")
    assert markdown_table(["metric", "value"], rows, align=False).splitlines() == [
        "| metric | value |", "|---|---|", "| pck | 0.5123 |", "| note |  |", "| ece | n/a |"]
