package escalate

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/slack-go/slack"
)

// Slack limits the text of a section block to 3000 characters.
const slackMaxText = 3000

func checkSlack(n NotifierConfig) []error {
	if n.Slack != nil && n.Slack.WebhookURLFile == "" {
		return []error{keyErr("slack.webhookURLFile", "required")}
	}
	return nil
}

// slackNotifier posts to a Slack incoming webhook. The webhook URL is a
// secret: anyone holding it can post to the channel.
type slackNotifier struct {
	url     string
	channel string
	http    *http.Client
}

func newSlack(key string, n NotifierConfig, env buildEnv) (sender, []string, error) {
	k := key + ".slack.webhookURLFile"
	u, err := readSecret(k, n.Slack.WebhookURLFile)
	if err != nil {
		return nil, nil, err
	}
	// url.Parse quotes its input in errors; say what is wrong without it.
	if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		return nil, nil, keyErr(k, "file %s does not hold an http or https URL", n.Slack.WebhookURLFile)
	}
	secrets := []string{u}
	if p, _ := url.Parse(u); p.Path != "" && p.Path != "/" {
		secrets = append(secrets, p.Path) // the token part
	}
	return &slackNotifier{url: u, channel: n.Slack.Channel, http: env.http}, secrets, nil
}

func (s *slackNotifier) send(ctx context.Context, m Message) error {
	// The error may quote the URL; notifier.describe removes it.
	return slack.PostWebhookCustomHTTPContext(ctx, s.url, s.http, s.message(m))
}

var slackEmoji = map[MessageKind]string{
	Page:     ":rotating_light:",
	Announce: ":information_source:",
	Resolve:  ":white_check_mark:",
}

// message lays a message out for Slack: the headline and summary, the
// incident's facts as fields, the details as a list, and the links. Text is
// the plain fallback that notifications show.
func (s *slackNotifier) message(m Message) *slack.WebhookMessage {
	mrkdwn := func(text string) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, truncate(text, slackMaxText), false, false)
	}
	blocks := []slack.Block{
		slack.NewSectionBlock(mrkdwn(slackEmoji[m.Kind]+" *"+slackEscape(m.title())+"*\n"+slackEscape(m.Summary)), nil, nil),
	}
	var fields []*slack.TextBlockObject
	for _, f := range m.facts() {
		fields = append(fields, mrkdwn("*"+f.label+"*\n"+slackEscape(f.value)))
	}
	if len(fields) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	}
	if len(m.Details) > 0 {
		lines := make([]string, len(m.Details))
		for i, d := range m.Details {
			lines[i] = "• " + slackEscape(d)
		}
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(strings.Join(lines, "\n")), nil, nil))
	}
	if ls := m.links(); len(ls) > 0 {
		parts := make([]string, len(ls))
		for i, l := range ls {
			parts[i] = "<" + slackEscape(l.href) + "|" + slackEscape(l.text) + ">"
		}
		blocks = append(blocks, slack.NewContextBlock("", mrkdwn(strings.Join(parts, " · "))))
	}
	return &slack.WebhookMessage{
		Channel: s.channel,
		Text:    slackEscape(m.title() + ": " + m.Summary),
		Blocks:  &slack.Blocks{BlockSet: blocks},
	}
}

// slackEscape escapes the three characters Slack's mrkdwn treats as markup.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
