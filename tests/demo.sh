#!/usr/bin/env bash
# make demo: the Telepresence walkthrough's color demo, on the local cluster (`make cluster-up`).
#
# In the cluster, deployment/dataprocessingservice answers GET /color with "green". We swap it for a
# "local version" that answers "blue" (the test app run on this machine), show that an in-cluster
# client now gets "blue", end the session, and show that the cluster answers "green" again.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${E2E_KUBECONFIG:-/var/lib/kubectl-tp-e2e/admin.kubeconfig}
export PATH=$PWD/bin:/var/cache/kubectl-tp/k8s-v1.34.4:$PATH
ns=tp-demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
kubectl apply -n "$ns" -f tests/demo/dataprocessingservice.yaml >/dev/null
kubectl rollout status -n "$ns" deployment/dataprocessingservice --timeout=120s >/dev/null
kubectl wait -n "$ns" --for=condition=Ready pod/client --timeout=120s >/dev/null
# incluster asks from pod 'client', retrying a failed request twice as a real client would; what it
# prints is always a real answer (or "(no answer)").
incluster() {
  local i out
  for i in 1 2 3; do
    out=$(kubectl exec -n "$ns" client -- /testapp get http://dataprocessingservice:3000/color 2>/dev/null) && { echo "$out"; return; }
    sleep 0.3
  done
  echo "(no answer)"
}
# switched: the Deployment is at 0 and its own pods are gone (the traffic can only reach this machine).
switched() {
  [[ $(kubectl get deployment -n "$ns" dataprocessingservice -o jsonpath='{.spec.replicas}') == 0 ]] &&
    [[ -z $(kubectl get pods -n "$ns" -l app=dataprocessingservice,pod-template-hash -o name) ]]
}

say "kubectl tp version"
kubectl-tp version

say "In the cluster: curl dataprocessingservice:3000/color (from pod 'client')"
echo "   → $(incluster)   (the Deployment running in the cluster)"

say "Swap: kubectl tp run -n $ns --swap-deployment dataprocessingservice --expose 3000 -- testapp -http=127.0.0.1:3000 -color=blue"
log=$(mktemp)
kubectl-tp run -n "$ns" --swap-deployment dataprocessingservice --expose 3000 -- \
  bin/testapp -http=127.0.0.1:3000 -https= -echo= -health= -color=blue >"$log" 2>&1 &
tp=$!
trap 'kill -INT $tp 2>/dev/null || true; wait $tp 2>/dev/null || true; rm -f "$log"' EXIT
start=$(date +%s%N)
for _ in $(seq 1 300); do switched && break; sleep 0.2; done
answer=$(incluster)
echo "   → $answer   (served by the process on this machine, $(( ($(date +%s%N) - start) / 1000000 )) ms after the swap began)"
[[ $answer == blue ]] || { echo "demo failed: the swap did not take effect"; cat "$log"; exit 1; }
kubectl get deployment -n "$ns" dataprocessingservice -o jsonpath='   deployment/dataprocessingservice: {.spec.replicas} replicas, swapped by session {.metadata.annotations.kubectl-tp\.io/swap-session}{"\n"}'

say "End the session (Ctrl-C)"
kill -INT $tp
wait $tp || true
trap 'rm -f "$log"' EXIT
kubectl rollout status -n "$ns" deployment/dataprocessingservice --timeout=120s >/dev/null
for _ in $(seq 1 100); do [[ $(incluster) == green ]] && break; sleep 0.2; done
answer=$(incluster)
echo "   → $answer   (the Deployment is back: $(kubectl get deployment -n "$ns" dataprocessingservice -o jsonpath='{.spec.replicas}') replica)"
[[ $answer == green ]] || { echo "demo failed: the Deployment was not restored"; exit 1; }
