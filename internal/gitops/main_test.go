package gitops_test

import (
	"os"
	"testing"

	"github.com/autorollbackd/autorollbackd/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }
