#!/bin/sh
# Creates the Secret the PostgreSQL StatefulSet and the Optuna workers read (never commit it).
# Rendered by hpcml.k8s.tune. Usage: sh manifests/tune/create-db-secret.sh [namespace]
# With External Secrets Operator, map the same two keys (password, url) from AWS Secrets Manager instead.
set -eu
NS="${1:-hpcml}"
PW="$(openssl rand -hex 24)"
kubectl -n "$NS" create secret generic hpcml-tune-db \
  --from-literal=password="$PW" \
  --from-literal=url="postgresql://optuna:${PW}@postgresql-0.postgresql.${NS}.svc:5432/optuna" \
  --dry-run=client -o yaml | kubectl apply -f -
