// Validates Strimzi resources (a JSON list on stdin, from `schemas.py pick kafka.strimzi.io`)
// against the schemas of Strimzi's released CRDs, as compiled into validators by the npm
// package @kubernetes-models/strimzi-kafka-operator (its version pins the Strimzi release;
// infra/k8s/validate.sh installs it into the cache). Usage: node strimzi-validate.mjs CACHE_DIR
//
// Strimzi publishes its CRDs only with its GitHub releases and Helm charts, neither reachable
// from a package registry here; these validators are the same schemas, compiled. They check
// types, enums, patterns, bounds and required fields; unlike kubeconform -strict they do not
// refuse a field the CRD does not list.
import { existsSync, readFileSync } from "node:fs";

const cache = process.argv[2];
const schemas = `${cache}/node_modules/@kubernetes-models/strimzi-kafka-operator/_schemas`;
const documents = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;

for (const document of documents) {
  const [group, version] = document.apiVersion.split("/");
  const prefix = group.split(".").map((part) => part[0].toUpperCase() + part.slice(1)).join("");
  const file = `${schemas}/${prefix}${version[0].toUpperCase()}${version.slice(1)}${document.kind}.js`;
  const where = `${document.kind} ${document.metadata?.name ?? "?"}`;
  if (!existsSync(file)) {
    console.log(`${where}: no schema for ${document.apiVersion} ${document.kind} (${file})`);
    failed += 1;
    continue;
  }
  const { validate } = await import(file);
  if (validate(document)) {
    console.log(`${where}: valid`);
  } else {
    failed += 1;
    for (const error of validate.errors) {
      console.log(`${where}: ${error.instancePath || "/"} ${error.keyword} ${JSON.stringify(error.params)}`);
    }
  }
}
console.log(`strimzi: ${documents.length - failed} valid, ${failed} invalid`);
process.exit(failed || documents.length === 0 ? 1 : 0);
