"""Every rule keeps what its job says: a log, with the command's whole stderr appended to it, and a benchmark record
beside the log for the model jobs (docs/results.md, "Logs and resources"). Read from the workflow's own files."""

from __future__ import annotations

import re

import yaml

from workflow_runs import REPO

# The model jobs: each runs a model or fits probes, and its record counts in summary/resources.tsv.
BENCHMARKED = {"embed_shard", "gather_embeddings", "measure_cost", "probe_layers", "logit_lens", "zero_shot", "exit_task", "time_exit", "exit_lens", "export_model"}
ACTIONS = ("shell", "run", "script", "notebook", "wrapper", "cwl")


def rules() -> dict[str, dict[str, str]]:
    """Every rule and checkpoint of the Snakefile and workflow/rules/*.smk: its directives' text, by name."""
    found = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for block in re.split(r"^(?=(?:rule|checkpoint) \w+:)", path.read_text(), flags=re.M)[1:]:
            first, *lines = block.splitlines()
            name = re.match(r"(?:rule|checkpoint) (\w+):", first).group(1)
            directives, key = {}, None
            for line in lines:
                directive = re.match(r"^    (\w+):\s*(.*)$", line)
                if directive:
                    key = directive.group(1)
                    directives[key] = directive.group(2) + "\n"
                elif line.startswith("        ") and key:
                    directives[key] += line + "\n"
                elif line.strip() and not line.startswith("    #"):
                    break  # the rule is over
            assert name not in found, f"rule {name} twice"
            found[name] = directives
    return found


def shell_command(directive: str) -> str:
    """A shell: directive's command, its implicitly concatenated string literals joined."""
    return "".join(re.findall(r'^\s*"(.*)"\s*$', directive, flags=re.M))


def quoted(directive: str) -> str:
    (path,) = re.findall(r'"([^"]+)"', directive)
    return path


def test_every_rule_with_a_command_sends_its_stderr_to_its_log_appended():
    found = rules()
    assert {"embed_shard", "prepare_task", "choose_assays", "fetch_data", "summarize_resources", "all"} <= set(found)
    for name, directives in found.items():
        actions = [a for a in ACTIONS if a in directives]
        assert actions in ([], ["shell"]), f"rule {name}: {actions}; run the plmexit CLI through shell: (docs/development.md)"
        if not actions:
            assert "log" not in directives, name  # a target rule (all, figures) runs nothing
            continue
        assert "log" in directives, f"rule {name} has no log:"
        log = quoted(directives["log"])
        assert log.startswith("<results>/logs/") and log.endswith(".log"), (name, log)
        command = shell_command(directives["shell"])
        # One command, its stderr appended (2>>, so the log lines and stderr share the file in order), nothing after it.
        assert command.startswith("plmexit ") and command.endswith(" 2>> {log}"), (name, command)
        assert command.count("{log}") == 1 and "--log" not in command and "|" not in command and ";" not in command, (name, command)


def test_the_model_jobs_keep_a_benchmark_record_beside_their_log():
    found = rules()
    benchmarked = {name for name, directives in found.items() if "benchmark" in directives}
    assert benchmarked == BENCHMARKED
    for name in benchmarked:
        log, benchmark = quoted(found[name]["log"]), quoted(found[name]["benchmark"])
        assert benchmark == "<results>/benchmarks/" + log.removeprefix("<results>/logs/").removesuffix(".log") + ".tsv", name
        assert benchmark.startswith(f"<results>/benchmarks/{name}/{{model}}/"), name  # the layout summarize-resources reads


def test_every_rule_a_profile_gives_a_gpu_is_a_benchmarked_model_job():
    """GPU-hours come from the jobs' records: a rule that holds a GPU must leave one."""
    profiles = sorted((REPO / "profiles").glob("*/config.yaml")) + sorted((REPO / "workflow" / "profiles").glob("*/config.yaml"))
    assert profiles
    gpu_rules = set()
    for profile in profiles:
        for rule, request in (yaml.safe_load(profile.read_text()).get("set-resources") or {}).items():
            if "gpu" in request or "gpu" in str(request.get("gres", "")):
                gpu_rules.add(rule)
    assert gpu_rules and gpu_rules <= BENCHMARKED, gpu_rules - BENCHMARKED
