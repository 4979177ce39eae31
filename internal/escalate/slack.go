package escalate

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackutilsx"
)

// Slack limits the text of a section or context block to 3000 characters,
// and that of a field of a section to 2000.
const (
	slackMaxText  = 3000
	slackMaxField = 2000
)

func checkSlack(n NotifierConfig) []error {
	if n.Slack != nil && n.Slack.WebhookURLFile == "" {
		return []error{keyErr("slack.webhookURLFile", "required")}
	}
	return nil
}

// slackNotifier posts to a Slack incoming webhook. The webhook URL is a
// secret: anyone holding it can post to the channel.
type slackNotifier struct {
	url     *fileSecret
	channel string
	http    *http.Client
}

func newSlack(key string, n NotifierConfig, env buildEnv) (sender, []*fileSecret, error) {
	k := key + ".slack.webhookURLFile"
	parse := func(u string) ([]string, error) {
		// url.Parse quotes its input in errors; say what is wrong without it.
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return nil, keyErr(k, "file %s does not hold an http or https URL", n.Slack.WebhookURLFile)
		}
		if p.Path != "" && p.Path != "/" {
			return []string{p.Path}, nil // the token part
		}
		return nil, nil
	}
	u, err := newFileSecret(k, n.Slack.WebhookURLFile, parse, env)
	if err != nil {
		return nil, nil, err
	}
	return &slackNotifier{url: u, channel: n.Slack.Channel, http: env.http}, []*fileSecret{u}, nil
}

func (s *slackNotifier) send(ctx context.Context, m Message) error {
	// The error may quote the URL; notifier.describe removes it.
	return slack.PostWebhookCustomHTTPContext(ctx, s.url.get(), s.http, s.message(m))
}

var slackEmoji = map[MessageKind]string{
	Page:     ":rotating_light:",
	Announce: ":information_source:",
	Resolve:  ":white_check_mark:",
}

// message lays a message out for Slack: the headline and summary, the
// incident's facts as fields, the details as a list, and the links. Text is
// the plain fallback that notifications show. Every text from the message
// is escaped (slackEscape) and cut without splitting an escape.
func (s *slackNotifier) message(m Message) *slack.WebhookMessage {
	mrkdwn := func(text string, n int) *slack.TextBlockObject {
		return slack.NewTextBlockObject(slack.MarkdownType, slackTruncate(text, n), false, false)
	}
	blocks := []slack.Block{
		slack.NewSectionBlock(mrkdwn(slackEmoji[m.Kind]+" *"+slackEscape(m.title())+"*\n"+slackEscape(m.Summary), slackMaxText), nil, nil),
	}
	var fields []*slack.TextBlockObject
	for _, f := range m.facts() {
		fields = append(fields, mrkdwn("*"+f.label+"*\n"+slackEscape(f.value), slackMaxField))
	}
	if len(fields) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	}
	if len(m.Details) > 0 {
		lines := make([]string, len(m.Details))
		for i, d := range m.Details {
			lines[i] = "• " + slackEscape(d)
		}
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(strings.Join(lines, "\n"), slackMaxText), nil, nil))
	}
	var links []string
	size := 0
	for _, l := range m.links() {
		// A link is kept whole or left out: a cut one would be broken
		// markup, or lead somewhere else.
		if md, ok := slackLink(l); ok && size+len(md)+len(slackLinkSep) <= slackMaxText {
			links = append(links, md)
			size += len(md) + len(slackLinkSep)
		}
	}
	if len(links) > 0 {
		blocks = append(blocks, slack.NewContextBlock("", mrkdwn(strings.Join(links, slackLinkSep), slackMaxText)))
	}
	return &slack.WebhookMessage{
		Channel: s.channel,
		Text:    slackEscape(m.title() + ": " + m.Summary),
		Blocks:  &slack.Blocks{BlockSet: blocks},
	}
}

const slackLinkSep = " · "

// slackEscape escapes the three characters Slack's mrkdwn treats as markup
// (&, < and >), so that text from an alert cannot mention a channel or a
// user or forge a link.
func slackEscape(s string) string { return slackutilsx.EscapeMessage(s) }

// slackLink returns the mrkdwn link <url|text> of l, and false when l's URL
// is not an absolute http or https URL. A | in the URL would end it and
// make the rest the link's text, so it is percent-encoded, which names the
// same resource.
func slackLink(l link) (string, bool) {
	u, err := url.Parse(l.href)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false
	}
	href := strings.ReplaceAll(l.href, "|", "%7C")
	return "<" + slackEscape(href) + "|" + slackEscape(l.text) + ">", true
}

// slackTruncate is truncate for escaped mrkdwn: it never leaves a piece of
// an escape (&amp;) behind. In escaped text every & starts an escape.
func slackTruncate(s string, n int) string {
	t := truncate(s, n)
	if t == s {
		return s
	}
	kept := strings.TrimSuffix(t, "…")
	if i := strings.LastIndexByte(kept, '&'); i >= 0 && !strings.Contains(kept[i:], ";") {
		kept = kept[:i]
	}
	return kept + "…"
}
