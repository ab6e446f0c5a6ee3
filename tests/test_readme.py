"""The README opens with exactly the two set-up commands, and CI runs the second one."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    main_job, tests = first_block
    assert main_job.endswith("slimgraph compile")
    ci_script = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_script
