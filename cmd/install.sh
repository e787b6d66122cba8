#!/usr/bin/env bash
# Installs mesh's manual pages (man/*.[0-9]) and its bash, zsh and fish
# completions. Safe to run again.
#
#   install.sh            as root: --system; otherwise --user
#   install.sh --system   /usr/local/share/man/manN, bash-completion's and
#                         zsh's directories under /usr/local/share, and
#                         /etc/fish/completions
#   install.sh --user     the same under ${XDG_DATA_HOME:-~/.local/share},
#                         and ${XDG_CONFIG_HOME:-~/.config}/fish/completions
#
# DESTDIR, when set, is put before every path (for packaging and tests).
#
# The completion files are small loaders: the first time a shell completes
# `mesh`, they ask the mesh on PATH for its script (`mesh completions
# SHELL`). So they always match the mesh that runs, and installing them
# needs no build. The mesh binary itself is installed with
# `cargo install --path cmd`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

mode=${1:-}
case "$mode" in
  "") if [ "$(id -u)" -eq 0 ]; then mode=--system; else mode=--user; fi ;;
  --system|--user) ;;
  *) echo "usage: install.sh [--system|--user]" >&2; exit 2 ;;
esac

if [ "$mode" = --system ]; then
  man_dir=/usr/local/share/man
  bash_dir=/usr/local/share/bash-completion/completions
  zsh_dir=/usr/local/share/zsh/site-functions
  # fish does not look under /usr/local/share; /etc/fish is its place for
  # what the administrator installs.
  fish_dir=/etc/fish/completions
else
  data=${XDG_DATA_HOME:-$HOME/.local/share}
  man_dir=$data/man
  bash_dir=$data/bash-completion/completions
  zsh_dir=$data/zsh/site-functions
  fish_dir=${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions
fi
dest=${DESTDIR:-}

pages=0
for page in "$root"/man/*.[0-9]; do
  [ -f "$page" ] || continue
  name=$(basename "$page")
  install -D -m 0644 "$page" "$dest$man_dir/man${name##*.}/$name"
  pages=$((pages + 1))
done

loader() { # FILE TEXT
  install -d "$(dirname "$1")"
  printf '%s\n' "$2" > "$1.tmp" && chmod 0644 "$1.tmp" && mv "$1.tmp" "$1"
}
note="installed by mesh's install.sh: loads the script of the mesh on PATH, so it always matches that mesh."

loader "$dest$bash_dir/mesh" "# bash completion for mesh, $note
if command -v mesh >/dev/null 2>&1; then
    eval \"\$(mesh completions bash 2>/dev/null)\"
fi"

# Autoloaded as the function _mesh: the script it loads defines _mesh anew
# and, seeing itself called as _mesh, runs it for this completion. Without
# eval_lineno, eval does not show in funcstack, so it sees that.
loader "$dest$zsh_dir/_mesh" "#compdef mesh
# zsh completion for mesh, $note
(( \$+commands[mesh] )) || return 1
setopt localoptions no_eval_lineno
eval \"\$(mesh completions zsh 2>/dev/null)\""

loader "$dest$fish_dir/mesh.fish" "# fish completion for mesh, $note
command -q mesh; and mesh completions fish 2>/dev/null | source"

# Refresh whatis/apropos for the system pages; man finds them without it.
if [ "$mode" = --system ] && [ -z "$dest" ] && command -v mandb >/dev/null; then
  mandb -q 2>/dev/null || true
fi

echo "install: $pages manual pages in $dest$man_dir; completions in $dest$bash_dir, $dest$zsh_dir, $dest$fish_dir"
if [ "$mode" = --user ]; then
  echo "install: zsh reads $zsh_dir only if it is in fpath (fpath+=($zsh_dir) before compinit)"
fi
