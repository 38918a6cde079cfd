"""The named templates (``X-Template: github`` / ``?tpl=alertmanager``): our own wording.

ntfy ships ``github``, ``grafana`` and ``alertmanager`` (``server/templates/*.yml``), each a
title, a message and optionally a priority, all Go templates on the webhook's JSON. These
are ours, written against the senders' documented payloads (GitHub webhook events, Grafana's
legacy and unified-alerting webhook, Alertmanager's webhook version 4), using only the subset
``tplfuncs`` implements. Each guards its field paths with ``with`` so a field the sender left
out never fails the render; a payload that is not the sender's fails with a ``fail`` that
says so (40045), as ntfy's do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Named:
    title: str
    message: str
    priority: str | None = None


_GH = (
    '{{- $who := "someone" }}{{ with .sender }}{{ with .login }}{{ $who = . }}{{ end }}{{ end }}'
    '{{- $repo := "a repository" }}{{ with .repository }}{{ with .full_name }}{{ $repo = . }}'
    "{{ end }}{{ end }}"
    '{{- $action := toString (.action | default "") }}'
)

_GH_TITLE = (
    _GH
    + """
{{- if and .zen .hook_id }}🏓 GitHub webhook ready for {{ $repo }}
{{- else if hasKey . "starred_at" }}⭐ {{ $who }} {{ if eq $action "deleted" }}unstarred\
{{ else }}starred{{ end }} {{ $repo }}
{{- else if and (eq $action "started") .repository }}👀 {{ $who }} is now watching {{ $repo }}
{{- else if and .ref (hasKey . "commits") }}
  {{- $ref := toString .ref | trimPrefix "refs/heads/" }}
  {{- if .deleted }}🗑️ {{ $who }} deleted {{ $ref }} in {{ $repo }}
  {{- else }}📦 {{ $who }} pushed {{ len .commits }} commit{{ if ne (len .commits) 1 }}s{{ end }}\
 to {{ $repo }}:{{ $ref }}{{ if .forced }} (forced){{ end }}{{ end }}
{{- else if .release }}{{ with .release }}🏷️ Release {{ .tag_name }} {{ $action }} in {{ $repo }}\
{{ end }}
{{- else if .pull_request }}{{ with .pull_request }}
  {{- if and (eq $action "closed") .merged }}{{ $action = "merged" }}{{ end -}}
  🔀 Pull request #{{ .number }} {{ $action }}: {{ .title }}{{ end }}
{{- else if and .comment .issue }}{{ with .issue }}💬 {{ $who }} commented on #{{ .number }}: \
{{ .title }}{{ end }}
{{- else if .issue }}{{ with .issue }}🐛 Issue #{{ .number }} {{ $action }}: {{ .title }}{{ end }}
{{- else }}{{ fail "unsupported GitHub event: not a ping, star, watch, push, release, pull \
request, issue or issue comment payload" }}{{ end }}
"""
)

_GH_MESSAGE = (
    _GH
    + """
{{- if and .zen .hook_id }}{{ .zen }}
{{- else if hasKey . "starred_at" }}{{ with .repository }}{{ .html_url }}{{ end }}
{{- else if and (eq $action "started") .repository }}{{ with .repository }}{{ .html_url }}{{ end }}
{{- else if and .ref (hasKey . "commits") }}
  {{- range $i, $c := .commits }}{{ if lt $i 10 }}{{ with $c }}
• {{ with .id }}{{ trunc 7 (toString .) }}{{ end }} \
{{ with .message }}{{ first (splitList "\\n" (toString .)) | trunc 100 }}{{ end }}\
{{ with .author }}{{ with .name }} ({{ . }}){{ end }}{{ end }}{{ end }}{{ end }}{{ end }}
  {{- if gt (len .commits) 10 }}
… and {{ sub (len .commits) 10 }} more{{ end }}
  {{- with .compare }}

{{ . }}{{ end }}
{{- else if .release }}{{ with .release }}{{ with .name }}{{ . }}
{{ end }}{{ .html_url }}{{ with .body }}

{{ toString . | trunc 1000 }}{{ end }}{{ end }}
{{- else if .pull_request }}{{ with .pull_request }}
  {{- with .head }}{{ .ref }}{{ end }} → {{ with .base }}{{ .ref }}{{ end }}\
{{ with .user }} by {{ .login }}{{ end }}
{{ $repo }}
{{ .html_url }}{{ with .body }}

{{ toString . | trunc 1000 }}{{ end }}{{ end }}
{{- else if and .comment .issue }}{{ with .comment }}{{ with .body }}{{ toString . | trunc 1000 }}
{{ end }}
{{ .html_url }}{{ end }}
{{- else if .issue }}{{ with .issue }}{{ with .user }}by {{ .login }}
{{ end }}{{ $repo }}
{{ .html_url }}{{ with .body }}

{{ toString . | trunc 1000 }}{{ end }}{{ end }}
{{- else }}{{ fail "unsupported GitHub event" }}{{ end }}
"""
)

# Grafana: unified alerting (status firing/resolved, title, message, alerts) and the legacy
# webhook (state alerting/ok/no_data/pending/paused, title, ruleName, message, ruleUrl).
_GF = (
    '{{- $state := toString (.status | default .state | default "") }}'
    '{{- $title := toString (.title | default .ruleName | default "Grafana alert") }}'
)

_GF_TITLE = (
    _GF
    + """
{{- if eq $state "firing" "alerting" }}🔥 {{ $title }}
{{- else if eq $state "resolved" "ok" }}✅ {{ $title }}
{{- else if eq $state "no_data" }}❔ {{ $title }}
{{- else if eq $state "pending" "paused" }}⏸️ {{ $title }}
{{- else }}{{ fail "not a Grafana webhook: no status or state" }}{{ end }}
"""
)

_GF_MESSAGE = (
    _GF
    + """
{{- with .message }}{{ toString . | trunc 3000 }}
{{- else }}{{ range .alerts }}{{ with .labels }}
{{ .alertname | default "alert" }}{{ end }}{{ with .annotations }}{{ with .summary }}: {{ . }}\
{{ end }}{{ end }}{{ end }}{{ end }}
{{- with .evalMatches }}
{{ range . }}
{{ .metric }} = {{ .value }}{{ end }}{{ end }}
{{- with .ruleUrl }}

{{ . }}{{ else }}{{ with .externalURL }}

{{ . }}{{ end }}{{ end }}
"""
)

_SEVERITY = """
{{- $sev := "" }}{{ with .commonLabels }}{{ with .severity }}{{ $sev = toString . | lower }}\
{{ end }}{{ end }}"""

_GF_PRIORITY = (
    _GF
    + _SEVERITY
    + """
{{- if eq $state "firing" "alerting" }}{{ if eq $sev "critical" }}5{{ else }}4{{ end }}
{{- else }}3{{ end }}
"""
)

# Alertmanager webhook, version 4 (alertmanager/notify/webhook: Message)
_AM_TITLE = """
{{- if not .alerts }}{{ fail "not an Alertmanager webhook: no alerts" }}{{ end }}
{{- $name := "" }}{{ with .commonLabels }}{{ with .alertname }}{{ $name = toString . }}\
{{ end }}{{ end }}
{{- if not $name }}{{ with index .alerts 0 }}{{ with .labels }}{{ with .alertname }}\
{{ $name = toString . }}{{ end }}{{ end }}{{ end }}{{ end }}
{{- $n := len .alerts }}
{{- if eq .status "firing" }}🔥 {{ $name | default "Alert" }} firing\
{{ if gt $n 1 }} ({{ $n }} alerts){{ end }}
{{- else if eq .status "resolved" }}✅ {{ $name | default "Alert" }} resolved
{{- else }}{{ fail "not an Alertmanager webhook: status is neither firing nor resolved" }}\
{{ end }}
"""

_AM_MESSAGE = """
{{- range .alerts }}
{{ if eq .status "resolved" }}✅{{ else }}🔥{{ end }} \
{{ with .labels }}{{ .alertname | default "alert" }}{{ with .instance }} on {{ . }}{{ end }}\
{{ with .severity }} [{{ . }}]{{ end }}{{ end }}
{{- with .annotations }}{{ with .summary }}
{{ . }}{{ end }}{{ with .description }}
{{ . }}{{ end }}{{ end }}
{{- if eq .status "resolved" }}{{ with .endsAt }}
Resolved at {{ . }}{{ end }}{{ else }}{{ with .startsAt }}
Since {{ . }}{{ end }}{{ end }}
{{ end }}
{{- with .externalURL }}
{{ . }}{{ end }}
"""

_AM_PRIORITY = (
    _SEVERITY
    + """
{{- if eq .status "resolved" }}3
{{- else if eq $sev "critical" "page" }}5
{{- else if eq $sev "info" "none" }}3
{{- else }}4{{ end }}
"""
)

NAMED: dict[str, Named] = {
    "github": Named(_GH_TITLE, _GH_MESSAGE),
    "grafana": Named(_GF_TITLE, _GF_MESSAGE, _GF_PRIORITY),
    "alertmanager": Named(_AM_TITLE, _AM_MESSAGE, _AM_PRIORITY),
}
