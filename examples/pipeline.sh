#!/usr/bin/env bash
# kimi in shell pipelines: only the answer goes to stdout, so it composes with other tools.
# Set KIMI_MODEL to a hub id or local checkpoint directory first (default: the hub model).
set -euo pipefail
here=$(dirname "$0")

# 1. An answer into a file; thinking and progress stay on stderr (hidden here).
kimi ask "$here/chelsea.png" "Describe this photo in one sentence." --thinking hide > /tmp/kimi-caption.txt
echo "caption: $(cat /tmp/kimi-caption.txt)"

# 2. Piped text is context, the argument is the question.
printf 'def add(a, b):\n    return a - b\n' | kimi ask "Find the bug in this function." --thinking hide

# 3. Machine-readable output for scripts.
kimi ask "$here/coffee.png" "What drink is this?" --format json | python3 -c \
  'import json, sys; r = json.load(sys.stdin); print(r["answer"], "|", r["usage"]["image_tokens"], "image tokens")'

# 4. A list read line by line: --no-stdin (or `< /dev/null`) keeps kimi from reading the rest of
#    the list as context, since piped stdin is otherwise added to the prompt.
ls "$here"/*.png | while read -r f; do
  printf '%s: ' "$(basename "$f")"
  kimi ask "$f" "Caption this in five words." --thinking hide --no-stdin
done

# 5. Each image of a folder, one line each.
for f in "$here"/*.png; do
  printf '%s: ' "$(basename "$f")"
  kimi ask "$f" "Name the main object in at most three words." --thinking hide
done
