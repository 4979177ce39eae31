// Package helm reads and rolls back Helm releases through the Helm SDK, for
// workloads that are part of a release: undoing only the workload would
// leave Helm's history saying the bad version runs, and the next `helm
// upgrade` would apply it again (policy.helm.mode rollback-release). It
// reads releases from Helm's default storage, Secrets of type
// helm.sh/release.v1 in the release's namespace.
package helm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Revision is one revision of a release, as `helm history` lists it.
type Revision struct {
	Number int
	// Status is Helm's: deployed, superseded, failed, pending-install,
	// pending-upgrade, pending-rollback, uninstalling, uninstalled.
	Status      string
	Description string
	// Manifest is the rendered manifest of the revision, documents
	// separated by "---".
	Manifest string
}

// StatusDeployed is the status of the revision that runs.
const StatusDeployed = "deployed"

// Errors callers branch on.
var (
	// ErrNotFound: the release has no revision in its namespace.
	ErrNotFound = errors.New("release not found")
	// ErrMoved: the release's newest revision is no longer the one the
	// rollback was planned on (someone upgraded or rolled it back).
	ErrMoved = errors.New("release has a newer revision than the one planned on")
	// ErrNotDeployed: the release's newest revision is not deployed (an
	// operation is pending, or it failed).
	ErrNotDeployed = errors.New("release's newest revision is not deployed")
	// ErrNoSDK is the answer of a build without the Helm SDK.
	ErrNoSDK = errors.New("this build of autorollbackd has no Helm SDK: build it with -tags helm (the -helm image)")
)

// Object is one object of a revision's manifest, named as the API server
// names it.
type Object struct {
	// Group is the API group ("" for the core group), Kind the kind.
	Group, Kind string
	// Namespace is the object's namespace, or the release's when the
	// manifest names none, as Helm installs it.
	Namespace, Name string
}

// PodTemplate returns, as JSON, spec.template of the object o in the
// manifest of rev, a revision of a release in releaseNamespace; false when
// the manifest holds no such object or it has no pod template.
func (rev Revision) PodTemplate(o Object, releaseNamespace string) (json.RawMessage, bool, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(rev.Manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("read the manifest of revision %d: %w", rev.Number, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec struct {
				Template json.RawMessage `json:"template"`
			} `json:"spec"`
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, false, fmt.Errorf("decode a document of the manifest of revision %d: %w", rev.Number, err)
		}
		group := ""
		if g, _, ok := strings.Cut(head.APIVersion, "/"); ok {
			group = g
		}
		ns := head.Metadata.Namespace
		if ns == "" {
			ns = releaseNamespace
		}
		if group != o.Group || head.Kind != o.Kind || ns != o.Namespace || head.Metadata.Name != o.Name {
			continue
		}
		if len(head.Spec.Template) == 0 || string(head.Spec.Template) == "null" {
			return nil, false, nil
		}
		return head.Spec.Template, true, nil
	}
}
