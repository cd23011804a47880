#!/usr/bin/env bash
# The README's demo: `make demo` runs this inside the project's virtualenv.
# Builds a T2L hypernet for a small base config, generates adapters for a few descriptions, validates them.
set -euo pipefail
out="${1:-demo_out}"
t2l=".venv/bin/t2l-ray"
mkdir -p "$out"
cat > "$out/base_config.json" <<'JSON'
{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048}
JSON
$t2l info --base-model mistral-7b-instruct-v0.2 --variant L
$t2l init-checkpoint --base-model "$out/base_config.json" --variant M --out "$out/hypernet"
i=0
for description in \
  "Reverse the order of the words in the sentence." \
  "Decide whether the number is even or odd." \
  "Extract every digit that appears in the text."; do
  i=$((i + 1))
  $t2l generate --checkpoint "$out/hypernet" --description "$description" --out "$out/adapters" --id "demo-$i"
  $t2l validate-adapter "$out/adapters/demo-$i" --base-model "$out/base_config.json" --max-lora-rank 8
done
echo "demo adapters are in $out/adapters"
