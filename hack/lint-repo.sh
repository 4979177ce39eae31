#!/usr/bin/env bash
# Repository checks of make lint: no built binary is tracked, and go.mod and
# go.sum are tidy. Run from the repository's root.
set -euo pipefail

status=0

# A built binary: an executable file git sees as binary, or any file that
# starts as an ELF, Mach-O or PE executable does.
while IFS=$'\t' read -r meta eol path; do
  mode=${meta%% *}
  eol=${eol%% *}
  [ -f "$path" ] || continue
  magic=$(head -c 4 -- "$path" | od -An -tx1 | tr -d ' \n')
  case $magic in
    7f454c46|cffaedfe|cefaedfe|feedface|feedfacf|cafebabe) kind=executable ;;
    4d5a*) kind=executable ;;
    *) kind= ;;
  esac
  if [ "$mode" = 100755 ] && [ "$eol" = i/-text ]; then kind=executable; fi
  if [ -n "$kind" ]; then
    echo "tracked built binary: $path (remove it with git rm --cached and ignore it)" >&2
    status=1
  fi
done < <(git ls-files -s --eol)

if ! diff=$(${GO:-go} mod tidy -diff 2>&1); then
  echo "go.mod and go.sum are not tidy; run go mod tidy:" >&2
  head -n 40 <<<"$diff" >&2
  status=1
fi

exit $status
