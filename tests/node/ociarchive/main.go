// Command ociarchive packs one static binary into a single-layer OCI image archive (an OCI image layout in a
// tar), the form `ctr images import` takes, so the node's test images need neither a registry nor a Docker
// daemon. The output is reproducible: the same binary and flags give the same bytes and digests.
//
//	ociarchive --binary target/node/bin/testimage --path /testimage --name localhost/jpki-node/testimage:v1 \
//	  --entrypoint /testimage,serve --user 65532:65532 --out target/node/images/testimage.tar
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

func main() {
	binary := flag.String("binary", "", "the static executable to put in the image")
	path := flag.String("path", "", "its path inside the image, e.g. /testimage")
	name := flag.String("name", "", "the image reference the archive carries, e.g. localhost/jpki-node/testimage:v1")
	entrypoint := flag.String("entrypoint", "", "comma-separated entrypoint, e.g. /testimage,serve")
	user := flag.String("user", "", "the image's user, e.g. 65532:65532 (empty: root)")
	out := flag.String("out", "", "the archive to write")
	flag.Parse()
	if *binary == "" || *path == "" || *name == "" || *entrypoint == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := pack(*binary, *path, *name, strings.Split(*entrypoint, ","), *user, *out); err != nil {
		fmt.Fprintf(os.Stderr, "ociarchive: %v\n", err)
		os.Exit(1)
	}
}

func pack(binary, path, name string, entrypoint []string, user, out string) error {
	content, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	// The layer: the binary alone, with a fixed mtime so the digest depends on the content only.
	var layer bytes.Buffer
	if err := writeTar(&layer, []tarFile{{name: strings.TrimPrefix(path, "/"), mode: 0o755, data: content}}); err != nil {
		return err
	}
	layerDigest := digest(layer.Bytes())

	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC().Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": entrypoint, "User": user, "Env": []string{"PATH=/"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(config), Size: len(config)},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: layer.Len()}},
	})
	tag := name[strings.LastIndex(name, ":")+1:]
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest(manifest), Size: len(manifest),
			Platform: map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			// containerd names the imported image after io.containerd.image.name; other tools read ref.name.
			Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
		}},
	})

	var archive bytes.Buffer
	files := []tarFile{{name: "oci-layout", mode: 0o644, data: []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {name: "index.json", mode: 0o644, data: index}}
	for _, blob := range [][]byte{config, manifest, layer.Bytes()} {
		files = append(files, tarFile{name: "blobs/sha256/" + strings.TrimPrefix(digest(blob), "sha256:"), mode: 0o644, data: blob})
	}
	if err := writeTar(&archive, files); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out+".tmp", archive.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(out+".tmp", out)
}

type tarFile struct {
	name string
	mode int64
	data []byte
}

func writeTar(w *bytes.Buffer, files []tarFile) error {
	tw := tar.NewWriter(w)
	written := map[string]bool{}
	for _, f := range files {
		// Parent directories first, as image unpackers expect.
		for _, dir := range parents(f.name) {
			if written[dir] {
				continue
			}
			written[dir] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// parents of "blobs/sha256/x": ["blobs", "blobs/sha256"].
func parents(name string) []string {
	var out []string
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		out = append(out, strings.Join(parts[:i], "/"))
	}
	return out
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
