#!/usr/bin/env bash
# The README's demo (`make demo` runs it inside the project's virtualenv):
# 1. inspects the generated task suite, 2. trains a T2L hypernet on it with Ray Train + DeepSpeed
# (jobs/demo_cpu.yaml: a tiny random-weight base, 2 CPU workers, ZeRO-2), 3. generates adapters for
# held-out descriptions with the trained hypernet, in one batch (a job this small runs in-process, no Ray),
# 4. validates one of them, 5. compares the generated adapters: different descriptions give different delta-W.
set -euo pipefail
out="${1:-demo_out}"
t2l=".venv/bin/t2l-ray"
mkdir -p "$out"
$t2l data inspect suite
$t2l train --config jobs/demo_cpu.yaml --output-dir "$out/run"
$t2l plot "$out/run"
cat > "$out/descriptions.jsonl" <<'JSONL'
{"id": "reverse-words", "description": "Reverse the order of the words in the sentence."}
{"id": "even-or-odd", "description": "Decide whether the number is even or odd and answer with one word."}
{"id": "digits", "description": "Extract every digit that appears in the text, in order."}
JSONL
$t2l batch-generate "$out/descriptions.jsonl" --checkpoint "$out/run/hypernet" --out "$out/adapters"
$t2l validate-adapter "$out/adapters/reverse-words" --max-lora-rank 8
$t2l compare-adapters "$out/adapters"
echo "demo: run folder $out/run (loss curve $out/run/loss.png), adapters in $out/adapters"
