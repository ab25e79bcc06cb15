# Pinned Python tool venvs for the scripts. Source this file, then:
#   venv_install DIR REQUIREMENTS   # creates DIR from REQUIREMENTS unless already done

# Creates (or updates) the venv DIR from the pinned REQUIREMENTS. Idempotent and cached:
# it reinstalls only when the requirements file changes.
venv_install() {
  local dir=$1 requirements=$2
  local stamp="$dir/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "installing $requirements into $dir (once)..." >&2
  if ! python3 -m venv --clear "$dir" >/dev/null 2>&1; then
    # Debian splits venv support into its own package.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv --clear "$dir"
    else
      echo "error: python3 -m venv failed; install Debian's python3-venv package (sudo apt-get install python3-venv)" >&2
      return 1
    fi
  fi
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}
