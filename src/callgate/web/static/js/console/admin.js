// Administration: users, groups, policy rules (with the explain tool), relays and their load.
// Each part talks to its own endpoint and says so plainly when the server lacks it.

import { api, boot, el, field, section, showError, status, table } from "./common.js";

const ROLES = ["user", "security", "compliance", "admin"];

function bytes(n) {
  if (typeof n !== "number") return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ---- users ----

async function usersPart(holder) {
  let body;
  try {
    body = await api("/api/users");
  } catch (err) {
    showError(holder, err, "Users", "GET /api/users");
    return;
  }
  const act = async (fn, done) => {
    try {
      await fn();
      status(done, "ok");
    } catch (err) {
      status(err.message);
    }
    await usersPart(holder);
  };
  const rows = body.users.map((u) => {
    const role = el("select", { "aria-label": `Role of ${u.handle}` }, ROLES.map((r) => el("option", { value: r, selected: (u.role || (u.is_admin ? "admin" : "user")) === r }, r)));
    role.addEventListener("change", () =>
      act(() => api(`/api/users/${encodeURIComponent(u.handle)}`, { method: "PATCH", body: { role: role.value } }), `${u.handle} is now ${role.value}.`));
    const toggle = el("button", { class: "btn small", type: "button" }, u.disabled ? "Enable" : "Disable");
    toggle.addEventListener("click", () =>
      act(() => api(`/api/users/${encodeURIComponent(u.handle)}/${u.disabled ? "enable" : "disable"}`, { method: "POST" }), `${u.handle} ${u.disabled ? "enabled" : "disabled"}.`));
    return el("tr", { dataset: { handle: u.handle } },
      el("td", {}, u.handle),
      el("td", {}, u.display_name),
      el("td", {}, (u.groups || []).join(", ") || "—"),
      el("td", {}, role),
      el("td", {}, u.disabled ? "disabled" : "active"),
      el("td", { title: u.email || "" }, SOURCES[u.source] || u.source || "local"),
      el("td", {}, toggle));
  });
  const form = el("form", { class: "filters", "aria-label": "Add a user" },
    field("User name", el("input", { name: "handle", required: true, autocomplete: "off" })),
    field("Display name", el("input", { name: "display_name", autocomplete: "off" })),
    field("Initial password", el("input", { name: "password", type: "password", required: true, autocomplete: "new-password" })),
    field("Role", el("select", { name: "role" }, ROLES.map((r) => el("option", { value: r }, r)))),
    el("div", {}, el("button", { class: "btn", type: "submit" }, "Add user")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = form.elements;
    act(() => api("/api/users", { method: "POST", body: { handle: f.handle.value.trim(), display_name: f.display_name.value.trim() || null, password: f.password.value, role: f.role.value } }), `Added ${f.handle.value.trim()}.`);
  });
  holder.replaceChildren(table(["User name", "Name", "Groups", "Role", "Status", "Source", "Action"], rows, "Users"), el("h3", {}, "Add a user"), form);
}

// Where an account comes from (docs/identity.md): its password is here, or in the directory.
const SOURCES = { local: "local", ldap: "directory (LDAP)", oidc: "single sign-on (OIDC)" };

// ---- groups ----

async function groupsPart(holder, isAdmin) {
  let body;
  try {
    body = await api("/api/groups");
  } catch (err) {
    showError(holder, err, "Groups", "GET /api/groups");
    return;
  }
  const rows = body.groups.map((g) =>
    el("tr", { dataset: { group: g.name } },
      el("td", {}, g.name),
      el("td", {}, g.description || "—"),
      el("td", {}, g.members.join(", ") || "—"),
      el("td", {}, g.turn_max_allocations ?? "—"),
      el("td", {}, g.turn_max_kbps ?? "—")));
  const parts = [rows.length ? table(["Group", "Description", "Members", "Max relay allocations", "Max kbit/s"], rows, "Groups") : el("p", { class: "muted" }, "No groups yet.")];
  if (isAdmin) {
    const form = el("form", { class: "filters", "aria-label": "Add a member to a group" },
      field("Group", el("input", { name: "group", required: true, autocomplete: "off" })),
      field("User name", el("input", { name: "handle", required: true, autocomplete: "off" })),
      el("div", {}, el("button", { class: "btn", type: "submit" }, "Add to group (creates it if new)")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const group = form.elements.group.value.trim();
      const handle = form.elements.handle.value.trim();
      try {
        if (!body.groups.some((g) => g.name === group)) await api("/api/groups", { method: "POST", body: { name: group } });
        await api(`/api/groups/${encodeURIComponent(group)}/members/${encodeURIComponent(handle)}`, { method: "PUT" });
        status(`${handle} is now in ${group}.`, "ok");
      } catch (err) {
        status(err.message);
      }
      await groupsPart(holder, isAdmin);
    });
    parts.push(el("h3", {}, "Membership"), form);
  }
  holder.replaceChildren(...parts);
}

// ---- policy ----

function who(party) {
  if (!party) return "anyone";
  if (party.user) return `user ${party.user}`;
  if (party.group) return `group ${party.group}`;
  return "anyone";
}

function when(rule) {
  const days = rule.days ? rule.days.map((d) => ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][d]).join(" ") : "every day";
  return rule.window ? `${days}, ${rule.window.start}–${rule.window.end}` : days;
}

function constraints(rule) {
  const list = [];
  if (rule.wall) list.push("ethical wall (both directions)");
  if (rule.relay_only) list.push("relay only");
  if (rule.max_duration_s) list.push(`max ${rule.max_duration_s} s`);
  if (rule.recording_required) list.push("recording required");
  return list.join(", ") || "—";
}

async function policyPart(holder, isAdmin) {
  let body;
  try {
    body = await api("/api/policy");
  } catch (err) {
    showError(holder, err, "Policy", "GET /api/policy");
    return;
  }
  const reload = () => policyPart(holder, isAdmin);
  const rows = body.rules.map((r) =>
    el("tr", { dataset: { ruleId: r.id } },
      el("td", { class: "num" }, r.position),
      el("td", {}, r.name, r.enabled ? "" : el("span", { class: "muted" }, " (off)")),
      el("td", {}, el("span", { class: `pill ${r.action === "deny" ? "poor" : "good"}` }, r.action)),
      el("td", {}, who(r.caller)),
      el("td", {}, who(r.callee)),
      el("td", {}, when(r)),
      el("td", {}, constraints(r)),
      el("td", {}, r.reason || "—"),
      isAdmin
        ? el("td", {}, el("button", { class: "btn small", type: "button", "aria-label": `Delete rule ${r.name}`, onclick: async () => {
            if (!window.confirm(`Delete the rule “${r.name}”?`)) return;
            try {
              await api(`/api/policy/rules/${r.id}`, { method: "DELETE" });
              status(`Deleted the rule “${r.name}”.`, "ok");
            } catch (err) {
              status(err.message);
            }
            await reload();
          } }, "Delete"))
        : null));
  const headers = ["#", "Rule", "Action", "Caller", "Callee", "When", "Constraints", "Reason shown"];
  if (isAdmin) headers.push("Action");
  const parts = [
    el("p", {}, `Default when no rule matches: `, el("strong", {}, body.default_action), ` · time zone ${body.time_zone}`),
    rows.length ? table(headers, rows, "Policy rules, first match wins") : el("p", { class: "muted" }, "No rules: the default applies to every call."),
  ];
  if (isAdmin) {
    const form = el("form", { class: "filters", "aria-label": "Add a rule" },
      field("Name", el("input", { name: "name", required: true, autocomplete: "off" })),
      field("Action", el("select", { name: "action" }, el("option", { value: "deny" }, "deny"), el("option", { value: "allow" }, "allow"))),
      field("Caller group", el("input", { name: "caller_group", autocomplete: "off" })),
      field("Callee group", el("input", { name: "callee_group", autocomplete: "off" })),
      field("Reason shown to callers", el("input", { name: "reason", autocomplete: "off" })),
      field("Ethical wall (both directions)", el("input", { name: "wall", type: "checkbox" })),
      el("div", {}, el("button", { class: "btn", type: "submit" }, "Add rule")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      const rule = {
        name: f.name.value.trim(),
        action: f.action.value,
        caller: f.caller_group.value.trim() ? { group: f.caller_group.value.trim() } : {},
        callee: f.callee_group.value.trim() ? { group: f.callee_group.value.trim() } : {},
        wall: f.wall.checked,
        reason: f.reason.value.trim(),
      };
      try {
        await api("/api/policy/rules", { method: "POST", body: rule });
        status(`Added the rule “${rule.name}”.`, "ok");
      } catch (err) {
        status(`The rule was not added: ${err.message}`);
      }
      await reload();
    });
    parts.push(el("h3", {}, "Add a rule"), form);
  }
  parts.push(el("h3", {}, "Explain: would this call be allowed?"), explainForm());
  holder.replaceChildren(...parts);
}

function explainForm() {
  const out = el("div", { id: "explain-result", role: "status", "aria-live": "polite" });
  const form = el("form", { class: "filters", "aria-label": "Explain a policy decision" },
    field("Caller", el("input", { name: "caller", required: true, autocomplete: "off" })),
    field("Callee", el("input", { name: "callee", required: true, autocomplete: "off" })),
    field("At (optional)", el("input", { name: "at", type: "datetime-local" })),
    el("div", {}, el("button", { class: "btn", type: "submit" }, "Explain")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const request = { caller: f.caller.value.trim(), callee: f.callee.value.trim() };
    if (f.at.value) request.at = new Date(f.at.value).toISOString();
    try {
      const r = await api("/api/policy/explain", { method: "POST", body: request });
      const c = r.constraints || {};
      out.replaceChildren(
        el("p", { class: `notice ${r.decision === "allow" ? "ok" : "error"}`, dataset: { decision: r.decision } },
          `${r.decision === "allow" ? "Allowed" : "Denied"}${r.reason ? `: ${r.reason}` : ""}`,
          r.rule_name ? ` (rule “${r.rule_name}”)` : " by the default action",
          c.relay_only || c.recording_required || c.max_duration_s ? ` · constraints: ${constraints(c)}` : ""),
        el("details", {}, el("summary", {}, "How it was decided"), el("ol", {}, (r.trace || []).map((t) => el("li", {}, t)))),
      );
    } catch (err) {
      out.replaceChildren(el("p", { class: "notice error" }, err.message));
    }
  });
  return el("div", {}, form, out);
}

// ---- relays ----

async function relaysPart(holder) {
  let body;
  try {
    body = await api("/api/relays");
  } catch (err) {
    showError(holder, err, "Relays", "GET /api/relays");
    return;
  }
  const max = Math.max(1, ...body.relays.map((r) => r.allocations));
  const rows = body.relays.map((r) =>
    el("tr", { dataset: { relay: r.name } },
      el("td", {}, r.name),
      el("td", {}, (r.listen || []).join(", ")),
      el("td", {}, el("meter", { min: "0", max: String(max), value: String(r.allocations), "aria-label": `Allocations on ${r.name}` }), ` ${r.allocations}`),
      el("td", { class: "num" }, r.allocations_total ?? "—"),
      el("td", { class: "num" }, bytes(r.bytes_in)),
      el("td", { class: "num" }, bytes(r.bytes_out)),
      el("td", { class: "num" }, r.auth_failures ?? "—"),
      el("td", { class: "num" }, r.quota_rejections ?? "—")));
  holder.replaceChildren(
    rows.length ? table(["Relay", "Listening on", "Allocations now", "Allocations total", "Bytes in", "Bytes out", "Auth failures", "Quota refusals"], rows, "Relays") : el("p", { class: "muted" }, "No relay runs in this process."),
  );
}

boot(["admin"], async (user, content) => {
  const users = el("div", { id: "users" }, "Loading…");
  const groups = el("div", { id: "groups" }, "Loading…");
  const policy = el("div", { id: "policy" }, "Loading…");
  const relays = el("div", { id: "relays" }, "Loading…");
  content.replaceChildren(section("Users", users), section("Groups", groups), section("Policy rules", policy), section("Relays", relays));
  const isAdmin = user.role === "admin";
  await Promise.all([usersPart(users), groupsPart(groups, isAdmin), policyPart(policy, isAdmin), relaysPart(relays)]);
  setInterval(() => relaysPart(relays), 5000);
});
