#!/usr/bin/env bash
# Seeds the fuzz corpora from the message fixtures (tests/data/messages/*.xml).
# wire_parse and handler get the fixtures as they are (handler's first byte picks the mode,
# so each fixture goes in once per mode); decrypt gets the Python sample's Encrypt payload.
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../tests/data/messages
mkdir -p corpus/wire_parse corpus/decrypt corpus/handler corpus/templates
for f in "$fixtures"/*.xml; do
  name=$(basename "$f" .xml)
  cp "$f" "corpus/wire_parse/$name"
  for mode in 0 1 2; do
    { printf "\\x0$mode"; cat "$f"; } > "corpus/handler/$mode-$name"
  done
  # The Encrypt payload of a safe-mode fixture, as the decrypt target sees it.
  sed -n 's/.*<Encrypt><!\[CDATA\[\(.*\)\]\]><\/Encrypt>.*/\1/p' "$f" > "corpus/decrypt/$name"
  [ -s "corpus/decrypt/$name" ] || rm "corpus/decrypt/$name"
done
printf '%s' 1795737600 > corpus/handler/3-timestamp
# templates: five template files (a, b, c, price, help) and inline strings, split by NUL.
i=0
for t in ../templates/*.hbs; do
  cp "$t" "corpus/templates/shipped-$i"; i=$((i + 1))
done
printf 'A {{> help}}\0B {{> price}}\0{{#each SendPicsInfo.PicList}}{{> c}}{{/each}}\0[{{PicMd5Sum}}]\0{{#*inline "row"}}- {{this}}{{/inline}}{{> row}}\0hi {{FromUserName}}\0{{#if Content}}{{> a}}{{else}}{{> b}}{{/if}}' > corpus/templates/partials
printf '{{#> layout}}x{{/layout}}\0{{> @partial-block}}\0{{strip_prefix EventKey "qrscene_"}}\0\0\0{{#each SendPicsInfo.PicList}}{{#each ../SendPicsInfo.PicList}}{{PicMd5Sum}}{{/each}}{{/each}}' > corpus/templates/blocks
echo "seeded: $(ls corpus/wire_parse | wc -l) wire_parse, $(ls corpus/decrypt | wc -l) decrypt, $(ls corpus/handler | wc -l) handler, $(ls corpus/templates | wc -l) templates"
