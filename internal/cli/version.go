package cli

import (
	"fmt"

	"github.com/prometheus/common/version"
	"github.com/spf13/cobra"
)

func newVersionCommand(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and build information",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(env.Stdout, versionInfo("autorollbackd"))
			return nil
		},
	}
}

// versionInfo is what version.Print prints, formatted without text/template:
// a template executed anywhere in the binary makes the linker keep every
// exported method of every type (docs/architecture.md#binary-size).
func versionInfo(program string) string {
	return fmt.Sprintf(`%s, version %s (branch: %s, revision: %s)
  build user:       %s
  build date:       %s
  go version:       %s
  platform:         %s/%s
  tags:             %s`,
		program, version.Version, version.Branch, version.GetRevision(),
		version.BuildUser, version.BuildDate, version.GoVersion, version.GoOS, version.GoArch, version.GetTags())
}
