package escalate

// Placeholder that keeps the notifier libraries required until the package
// uses them.
import (
	_ "github.com/PagerDuty/go-pagerduty"
	_ "github.com/slack-go/slack"
)
