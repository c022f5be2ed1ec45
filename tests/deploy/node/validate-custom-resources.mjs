// Validates custom resources against the schemas of @kubernetes-models: reads a JSON array of
// documents on stdin, prints one JSON line per document, exits 1 if any is invalid or of a
// kind it has no schema for.
import {
  ScaledObject,
  TriggerAuthentication,
} from "@kubernetes-models/keda/keda.sh/v1alpha1";
import {
  PodMonitor,
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const documents = JSON.parse(Buffer.concat(chunks).toString("utf8"));

let failed = false;
for (const document of documents) {
  const type = `${document.apiVersion}/${document.kind}`;
  const name = document.metadata?.name;
  const Model = MODELS[type];
  if (!Model) {
    failed = true;
    console.log(JSON.stringify({ type, name, valid: false, error: "no schema for this kind" }));
    continue;
  }
  try {
    new Model(document).validate();
    console.log(JSON.stringify({ type, name, valid: true }));
  } catch (error) {
    failed = true;
    console.log(JSON.stringify({ type, name, valid: false, error: String(error.message ?? error) }));
  }
}
process.exit(failed ? 1 : 0);
