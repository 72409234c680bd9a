#!/usr/bin/env bash
# install_test.sh — `make dist-test`: checks what `make dist` wrote, then installs it the way users do.
#   1. dist/SHA256SUMS matches; each archive holds exactly LICENSE, kubectl-tp[.exe] and the completion
#      executable, built for its GOOS/GOARCH with CGO off and holding $VERSION; the image index has
#      linux/amd64 and linux/arm64 and the name $IMAGE.
#   2. krew's validate-krew-manifest accepts krew-manifest.yaml and installs every platform of it
#      (from the local archives: its `kubectl krew` is a shim adding --archive).
#   3. krew installs the linux/amd64 archive into a temporary KREW_ROOT; `kubectl tp version`
#      through kubectl's plugin discovery prints $VERSION and $IMAGE; `kubectl tp <TAB>` completes
#      through kubectl and kubectl_complete-tp.
# krew $KREW_TOOLS_VERSION is built from the Go module proxy into $KREW_TOOLS once.
set -euo pipefail

die() { echo "dist-test: $*" >&2; exit 1; }
for v in GO VERSION KREW_VERSION IMAGE DIST KREW_TOOLS_VERSION KREW_TOOLS; do
	[[ -n ${!v:-} ]] || die "$v is not set; run this through 'make dist-test'"
done
cd "$(dirname "$0")/../.."
DIST=$(cd "$DIST" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# kubectl: the one the test cluster harness built, else the one on PATH.
KUBECTL=${KUBECTL:-/var/cache/kubectl-tp/k8s-v1.34.4/kubectl}
[[ -x $KUBECTL ]] || KUBECTL=$(command -v kubectl) || die "no kubectl: set KUBECTL or put kubectl on PATH"
minor=$("$KUBECTL" version --client -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')
[[ ${minor:-0} -ge 26 ]] || die "$KUBECTL is older than 1.26 (minor '$minor'); plugin completion needs 1.26"

# --- 1. the files -------------------------------------------------------------------------------
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || die "$DIST/SHA256SUMS does not match the files"
archives=("$DIST"/kubectl-tp_"$VERSION"_*)
[[ ${#archives[@]} -gt 0 && -e ${archives[0]} ]] || die "no archives for version $VERSION in $DIST; run make dist"
for a in "${archives[@]}"; do
	plat=${a##*/kubectl-tp_"$VERSION"_} plat=${plat%%.*}
	os=${plat%_*} arch=${plat#*_}
	x=$tmp/x/$plat
	mkdir -p "$x"
	if [[ $os == windows ]]; then
		[[ $a == *.zip ]] || die "$a: windows archives must be .zip"
		unzip -q "$a" -d "$x"
		want='LICENSE kubectl-tp.exe kubectl_complete-tp.cmd' bin=$x/kubectl-tp.exe
	else
		[[ $a == *.tar.gz ]] || die "$a: $os archives must be .tar.gz"
		tar -C "$x" -xzf "$a"
		want='LICENSE kubectl-tp kubectl_complete-tp' bin=$x/kubectl-tp
		[[ -x $x/kubectl-tp && -x $x/kubectl_complete-tp ]] || die "$a: kubectl-tp and kubectl_complete-tp must be executable"
	fi
	got=$(cd "$x" && echo *)
	[[ $got == "$want" ]] || die "$a holds '$got', want '$want'"
	info=$("$GO" version -m "$bin")
	for w in "GOOS=$os" "GOARCH=$arch" "CGO_ENABLED=0"; do
		grep -q -- "$w" <<<"$info" || die "$a: kubectl-tp lacks $w in its build info"
	done
	# -trimpath leaves -ldflags out of the build info: look for the -X value itself.
	grep -aqF -- "$VERSION" "$bin" || die "$a: kubectl-tp does not hold its version $VERSION"
done
echo "dist-test: ${#archives[@]} archives hold the right files and binaries"

mkdir -p "$tmp/image"
tar -C "$tmp/image" -xf "$DIST/podshim-image.tar"
index=$(tr -d ' \n' <"$tmp/image/index.json")
grep -q "\"org.opencontainers.image.ref.name\":\"$IMAGE\"" <<<"$index" || die "podshim-image.tar is not named $IMAGE: $index"
digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$index" | head -1 | cut -d: -f3 | tr -d '"')
inner=$(tr -d ' \n' <"$tmp/image/blobs/sha256/$digest")
for arch in amd64 arm64; do
	grep -q "\"architecture\":\"$arch\",\"os\":\"linux\"" <<<"$inner" ||
		die "podshim-image.tar's index has no linux/$arch manifest: $inner"
done
echo "dist-test: podshim-image.tar is an image index for linux/amd64 and linux/arm64 named $IMAGE"

# --- 2. krew's validator ------------------------------------------------------------------------
if [[ ! -x $KREW_TOOLS/krew || ! -x $KREW_TOOLS/validate-krew-manifest ]]; then
	echo "dist-test: building krew $KREW_TOOLS_VERSION into $KREW_TOOLS"
	src=$(cd "$tmp" && "$GO" mod download -json "sigs.k8s.io/krew@$KREW_TOOLS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	[[ -d $src ]] || die "go mod download sigs.k8s.io/krew@$KREW_TOOLS_VERSION gave no source directory"
	mkdir -p "$KREW_TOOLS"
	cp -r "$src" "$tmp/krew-src" && chmod -R u+w "$tmp/krew-src"
	(cd "$tmp/krew-src" && CGO_ENABLED=0 "$GO" build -trimpath -o "$KREW_TOOLS/" ./cmd/krew ./cmd/validate-krew-manifest) ||
		die "building krew $KREW_TOOLS_VERSION failed"
fi
# The validator runs `kubectl krew install --manifest F` per platform (KREW_OS, KREW_ARCH set),
# which would download the release; this kubectl shim installs the local archive instead.
mkdir -p "$tmp/shim"
cat >"$tmp/shim/kubectl" <<EOF
#!/usr/bin/env bash
set -euo pipefail
[[ \${1:-} == krew ]] || exec "$KUBECTL" "\$@"
shift
archive=\$(echo "$DIST/kubectl-tp_${VERSION}_\${KREW_OS}_\${KREW_ARCH}".*)
KREW_NO_UPGRADE_CHECK=1 exec "$KREW_TOOLS/krew" "\$@" --archive="\$archive"
EOF
chmod +x "$tmp/shim/kubectl"
cp krew-manifest.yaml "$tmp/tp.yaml" # the validator takes the plugin's name from the file's name
grep -q "^  version: $KREW_VERSION\$" "$tmp/tp.yaml" || die "krew-manifest.yaml is not for version $KREW_VERSION; run make dist"
PATH=$tmp/shim:$PATH "$KREW_TOOLS/validate-krew-manifest" -manifest "$tmp/tp.yaml" >"$tmp/validate.log" 2>&1 ||
	die "validate-krew-manifest rejects krew-manifest.yaml: $(grep -m1 '^F[0-9]' "$tmp/validate.log" || tail -1 "$tmp/validate.log")"
grep -q "all ${#archives[@]} spec.platforms installed fine" "$tmp/validate.log" ||
	die "validate-krew-manifest did not install all ${#archives[@]} platforms: $(tail -3 "$tmp/validate.log")"
echo "dist-test: validate-krew-manifest ($KREW_TOOLS_VERSION) accepts krew-manifest.yaml and installs its ${#archives[@]} platforms"

# --- 3. a real krew install, used through kubectl -----------------------------------------------
linux=$DIST/kubectl-tp_${VERSION}_linux_amd64.tar.gz
[[ -f $linux ]] || die "$linux is missing; make dist builds it"
export KREW_ROOT=$tmp/krew KREW_NO_UPGRADE_CHECK=1
"$KREW_TOOLS/krew" install --manifest=krew-manifest.yaml --archive="$linux" >"$tmp/install.log" 2>&1 ||
	die "krew install failed: $(tail -3 "$tmp/install.log")"
# Only kubectl, krew's bin directory and the basics: no kubectl-tp from elsewhere.
export PATH=$KREW_ROOT/bin:$(dirname "$KUBECTL"):/usr/bin:/bin
plugins=$("$KUBECTL" plugin list 2>/dev/null || true)
grep -qx "$KREW_ROOT/bin/kubectl-tp" <<<"$plugins" || die "kubectl plugin list does not show $KREW_ROOT/bin/kubectl-tp"
out=$("$KUBECTL" tp version) || die "kubectl tp version failed: $out"
[[ $out == "kubectl-tp $VERSION"$'\n'"image: $IMAGE" ]] || die "kubectl tp version printed '$out', want version $VERSION and image $IMAGE"
echo "dist-test: krew installed tp $KREW_VERSION; kubectl tp version prints $VERSION and $IMAGE"

# Completion as the krew caveats set it up: kubectl_complete-tp copied into krew's bin directory.
cp "$KREW_ROOT"/store/tp/*/kubectl_complete-tp "$KREW_ROOT/bin/"
cat >"$tmp/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: tp-one, context: {cluster: c, user: u}}, {name: tp-two, context: {cluster: c, user: u}}]
current-context: tp-one
EOF
check_complete() { # check_complete WANT ARGS... — `kubectl __complete ARGS` lists WANT (one line each) and a directive
	local want=$1 got
	shift
	got=$(KUBECONFIG=$tmp/kubeconfig "$KUBECTL" __complete "$@" 2>/dev/null | cut -f1) || die "kubectl __complete $* failed"
	[[ $(grep -v '^:' <<<"$got") == "$want" && $(tail -1 <<<"$got") == :* ]] ||
		die "kubectl __complete $* gave '$got', want '$want' and a directive"
}
check_complete tp tp
check_complete "status" tp st
check_complete $'bash\nfish\npowershell\nzsh' tp completion ''
check_complete $'tp-one\ntp-two' tp run --context tp-
echo "dist-test: kubectl tp <TAB> completes subcommands and flags through kubectl_complete-tp"
