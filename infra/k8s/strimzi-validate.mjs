// Validates Strimzi resources (a JSON list on stdin, from `schemas.py pick kafka.strimzi.io`)
// against Strimzi's released CRDs as the npm package @kubernetes-models/strimzi-kafka-operator
// ships them (its version pins the Strimzi release; infra/k8s/validate.sh installs it and
// TypeScript into the cache). Usage: node strimzi-validate.mjs CACHE_DIR
//
// Strimzi publishes its CRD files only with its GitHub releases and Helm charts, neither
// reachable from a package registry here; that package carries the same schemas twice:
// 1. compiled to JSON-schema validators: types, enums, patterns, bounds, required fields;
// 2. as TypeScript types: every document becomes a typed object literal and `tsc` refuses a
//    field the CRD does not list (an excess property), like kubeconform -strict.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";

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
// 2. unknown fields: one typed literal per line, so tsc's line numbers name the document
const modelPackage = "@kubernetes-models/strimzi-kafka-operator";
const types = new Map();
for (const document of documents) {
  const [group, version] = document.apiVersion.split("/");
  types.set(`${group}/${version}/${document.kind}`, `T${types.size}`);
}
const imports = [...types].map(([path, alias]) => {
  const kind = path.split("/").pop();
  return `import type { I${kind} as ${alias} } from "${modelPackage}/${path}";`;
});
const lines = documents.map((document, index) => {
  const [group, version] = document.apiVersion.split("/");
  return `export const d${index}: ${types.get(`${group}/${version}/${document.kind}`)} = ${JSON.stringify(document)};`;
});
const check = `${cache}/.check-${process.pid}.ts`;
writeFileSync(check, [...imports, ...lines].join("\n") + "\n");
try {
  execFileSync(process.execPath, [`${cache}/node_modules/typescript/bin/tsc`, "--noEmit", "--strict", "--skipLibCheck",
    "--module", "nodenext", "--moduleResolution", "nodenext", check], { encoding: "utf8" });
} catch (error) {
  const reported = new Set();
  for (const line of `${error.stdout ?? ""}`.split("\n")) {
    const match = line.match(/\((\d+),\d+\): error (TS\d+: .*)$/);
    if (!match) continue;
    const document = documents[Number(match[1]) - 1 - imports.length];
    const where = document ? `${document.kind} ${document.metadata?.name ?? "?"}` : "tsc";
    console.log(`${where}: ${match[2]}`);
    if (document && !reported.has(document)) {
      reported.add(document);
      failed += 1;
    }
  }
  if (reported.size === 0) {
    console.log(`tsc failed: ${error.stdout ?? ""}${error.stderr ?? ""}`);
    failed += 1;
  }
} finally {
  rmSync(check, { force: true });
}

console.log(`strimzi: ${documents.length} documents, ${failed} invalid`);
process.exit(failed || documents.length === 0 ? 1 : 0);
