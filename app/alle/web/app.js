// The Alle web client: one ES module, no framework and no build step (app/README.md says why).
// Every piece of text from the API becomes a text node (append, textContent), never markup.

const TOKEN_KEY = "alle.token";
const REPORTS_KEY = "alle.reports";
const PAGE_SIZE = 10;
const MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024;
const REPORT_POLL_MS = 1000;
const STATUS_LABELS = { todo: "To do", in_progress: "In progress", done: "Done" };
const UNREACHABLE = "Could not reach Alle; check your connection and try again.";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const announcer = document.getElementById("announce");
let uid = 0;
let flash = "";
let pollTimer = null;

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail) {
    const { message, fields } = describe(status, detail);
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

/** The API answers {"detail": "sentence"} or, for invalid input, {"detail": [{loc, msg}]}: map those to fields. */
function describe(status, detail) {
  if (status === 0) return { message: UNREACHABLE, fields: {} };
  if (typeof detail === "string" && detail) return { message: detail, fields: {} };
  if (Array.isArray(detail)) {
    const fields = {};
    const rest = [];
    for (const item of detail) {
      const loc = Array.isArray(item.loc) ? item.loc : [];
      // ["body", "title"] names a field; ["body"] alone is the whole body (an empty upload, say).
      const name = loc[0] === "body" && loc.length > 1 ? loc[loc.length - 1] : null;
      const text = String(item.msg || "is not valid").replace(/^Value error, /, "");
      if (typeof name === "string" && !(name in fields)) fields[name] = text;
      else rest.push(loc.length > 1 ? `${loc[loc.length - 1]}: ${text}` : text);
    }
    const message = rest.length ? rest.join(" ") : "Some fields need attention; see the messages next to them.";
    return { message, fields };
  }
  return { message: `Alle answered ${status}; try again in a moment.`, fields: {} };
}

function token() {
  return localStorage.getItem(TOKEN_KEY);
}

async function errorFrom(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    // Not JSON (a proxy's page, say): the status code alone is described.
  }
  return new ApiError(response.status, detail);
}

async function api(method, path, { body, headers = {}, raw = false } = {}) {
  const sent = new Headers(headers);
  if (token()) sent.set("Authorization", `Bearer ${token()}`);
  if (body !== undefined) sent.set("Content-Type", "application/json");
  let response;
  try {
    response = await fetch(`/v1${path}`, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, null);
  }
  if (response.status === 401 && token()) {
    endSession("Your session ended; log in again.");
    throw await errorFrom(response);
  }
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/** XMLHttpRequest, not fetch, because only it reports upload progress. */
function uploadFile(taskId, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/tasks/${taskId}/attachments?filename=${encodeURIComponent(file.name)}`);
    xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let parsed = null;
      try {
        parsed = JSON.parse(xhr.responseText);
      } catch {
        parsed = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed);
      else reject(new ApiError(xhr.status, parsed && parsed.detail));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null)));
    xhr.send(file);
  });
}

/** Downloads need the bearer token, so they go through fetch and a short-lived object URL. */
async function download(path, fallbackName) {
  const response = await api("GET", path, { raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : fallbackName;
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  announce(`Downloaded ${name}.`);
}

// ---------------------------------------------------------------- DOM helpers

function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "value") element.value = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

function announce(text) {
  announcer.textContent = "";
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

/** A labelled control with its own error line, tied together with aria-describedby. */
function field({ label, name, type = "text", value = "", hint, options, ...attributes }) {
  const id = `f-${name}-${++uid}`;
  const described = [];
  const hintLine = hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null;
  if (hintLine) described.push(hintLine.id);
  const error = h("p", { id: `${id}-error`, class: "field-error", hidden: true });
  described.push(error.id);
  const common = { id, name, "aria-describedby": described.join(" "), ...attributes };
  let control;
  if (type === "textarea") control = h("textarea", common);
  else if (type === "select") {
    control = h(
      "select",
      common,
      options.map(([optionValue, text]) => h("option", { value: optionValue }, text)),
    );
  } else control = h("input", { type, ...common });
  control.value = value;
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), hintLine, control, error);
  return { wrap, control, error, name };
}

/** A form whose submit handler gets the values; API errors land next to the field they name, or on the form. */
function form({ label, fields, submit, onSubmit, extra = [] }) {
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, submit);
  const element = h(
    "form",
    { "aria-label": label, novalidate: true },
    formError,
    fields.map((f) => f.wrap),
    h("div", { class: "actions" }, button, extra),
  );
  const clear = () => {
    formError.hidden = true;
    formError.textContent = "";
    for (const f of fields) {
      f.error.hidden = true;
      f.error.textContent = "";
      f.control.removeAttribute("aria-invalid");
    }
  };
  const show = (error) => {
    let first = null;
    for (const f of fields) {
      const message = error.fields && error.fields[f.name];
      if (!message) continue;
      f.error.textContent = message;
      f.error.hidden = false;
      f.control.setAttribute("aria-invalid", "true");
      first = first || f.control;
    }
    const named = fields.some((f) => error.fields && error.fields[f.name]);
    if (!named || Object.keys(error.fields || {}).some((k) => !fields.some((f) => f.name === k))) {
      formError.textContent = error.message;
      formError.hidden = false;
    }
    if (first) first.focus();
  };
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear();
    const missing = fields.find((f) => f.control.required && !f.control.value.trim());
    if (missing) {
      show({ fields: { [missing.name]: "This field is required." }, message: "" });
      return;
    }
    const values = Object.fromEntries(fields.map((f) => [f.name, f.control.value]));
    // aria-disabled, not disabled: a disabled button drops keyboard focus. A second submit still goes out;
    // creates carry an Idempotency-Key, so it replays the first instead of making a second task.
    button.setAttribute("aria-disabled", "true");
    try {
      await onSubmit(values);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      show(error);
    } finally {
      button.removeAttribute("aria-disabled");
    }
  });
  return { element, fields: Object.fromEntries(fields.map((f) => [f.name, f.control])), show, clear };
}

function errorLine() {
  return h("p", { class: "form-error", role: "alert", hidden: true });
}

function showError(line, error) {
  line.textContent = error instanceof ApiError ? error.message : String(error);
  line.hidden = false;
}

/** A button that shows an API error next to itself and ignores clicks while its action runs. */
function action(text, run, { kind = "secondary", line } = {}) {
  const button = h("button", { type: "button", class: kind }, text);
  button.addEventListener("click", async () => {
    if (button.getAttribute("aria-disabled") === "true") return;
    if (line) line.hidden = true;
    button.setAttribute("aria-disabled", "true");
    try {
      await run();
    } catch (error) {
      if (!(error instanceof ApiError) || !line) throw error;
      showError(line, error);
    } finally {
      button.removeAttribute("aria-disabled");
    }
  });
  return button;
}

function screen(title, ...content) {
  clearInterval(pollTimer);
  pollTimer = null;
  const heading = h("h1", { tabindex: "-1" }, title);
  const notice = flash ? h("p", { class: "notice", role: "status" }, flash) : null;
  flash = "";
  main.replaceChildren(...[heading, notice, ...content].filter(Boolean));
  document.title = `${title} · Alle`;
  heading.focus();
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function formatDate(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// ---------------------------------------------------------------- session

function endSession(message) {
  localStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(REPORTS_KEY);
  flash = message;
  go("#/login");
}

function renderNav(current) {
  if (!token()) {
    nav.replaceChildren();
    return;
  }
  const link = (hash, text) => h("a", { href: hash, "aria-current": current === hash ? "page" : null }, text);
  const logout = h("button", { type: "button", class: "link" }, "Log out");
  logout.addEventListener("click", async () => {
    try {
      await api("POST", "/auth/logout");
    } catch {
      // The token is dropped either way; an expired session is already logged out.
    }
    endSession("You are logged out.");
  });
  nav.replaceChildren(link("#/tasks", "Tasks"), link("#/reports", "Reports"), logout);
}

function authScreen(mode) {
  const signup = mode === "signup";
  const email = field({ label: "Email", name: "email", type: "email", autocomplete: "email", required: true });
  const password = field({
    label: "Password",
    name: "password",
    type: "password",
    autocomplete: signup ? "new-password" : "current-password",
    required: true,
    hint: signup ? "Use 12 or more characters." : null,
  });
  const { element } = form({
    label: signup ? "Sign up" : "Log in",
    fields: [email, password],
    submit: signup ? "Sign up" : "Log in",
    onSubmit: async (values) => {
      if (signup) {
        await api("POST", "/auth/signup", { body: values });
        flash = "Signed up. Log in with the same email and password.";
        sessionStorage.setItem("alle.email", values.email);
        go("#/login");
        return;
      }
      const session = await api("POST", "/auth/login", { body: values });
      localStorage.setItem(TOKEN_KEY, session.access_token);
      go("#/tasks");
    },
  });
  if (!signup) email.control.value = sessionStorage.getItem("alle.email") || "";
  const other = signup
    ? h("p", {}, "Have an account? ", h("a", { href: "#/login" }, "Log in"))
    : h("p", {}, "New to Alle? ", h("a", { href: "#/signup" }, "Create an account"));
  screen(signup ? "Create your Alle account" : "Log in to Alle", element, other);
}

// ---------------------------------------------------------------- tasks

/** One Idempotency-Key per intended create: kept for retries of the same body, new once it succeeded. */
const pendingCreate = { key: null, body: null };

function idempotencyKeyFor(body) {
  const serialized = JSON.stringify(body);
  if (pendingCreate.key === null || pendingCreate.body !== serialized) {
    // getRandomValues, unlike randomUUID, also works on plain http to a LAN address (not a secure context).
    pendingCreate.key = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
    pendingCreate.body = serialized;
  }
  return pendingCreate.key;
}

function taskBody(values) {
  return { title: values.title.trim(), notes: values.notes, due_date: values.due_date || null };
}

function listQuery(params) {
  const status = params.get("status") || "";
  const page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  return { status, page };
}

function listHash(status, page) {
  const params = new URLSearchParams();
  if (status) params.set("status", status);
  if (page > 1) params.set("page", String(page));
  const query = params.toString();
  return query ? `#/tasks?${query}` : "#/tasks";
}

async function setStatus(task, status) {
  return status === "done"
    ? api("POST", `/tasks/${task.id}/complete`)
    : api("PATCH", `/tasks/${task.id}`, { body: { status } });
}

function statusBadge(status) {
  return h("span", { class: `badge badge-${status}` }, STATUS_LABELS[status] || status);
}

async function tasksScreen(params) {
  const { status, page } = listQuery(params);
  const title = field({ label: "Title", name: "title", required: true, maxlength: 200 });
  const notes = field({ label: "Notes", name: "notes", type: "textarea", rows: 2, maxlength: 10000 });
  const due = field({ label: "Due date", name: "due_date", type: "date" });
  const create = form({
    label: "New task",
    fields: [title, notes, due],
    submit: "Add task",
    onSubmit: async (values) => {
      const body = taskBody(values);
      const task = await api("POST", "/tasks", { body, headers: { "Idempotency-Key": idempotencyKeyFor(body) } });
      pendingCreate.key = null;
      flash = `Added “${task.title}”.`;
      go("#/tasks");
    },
  });
  const filter = field({
    label: "Show",
    name: "status",
    type: "select",
    value: status,
    options: [["", "All tasks"], ...Object.entries(STATUS_LABELS)],
  });
  filter.control.addEventListener("change", () => go(listHash(filter.control.value, 1)));
  const listError = errorLine();
  const list = h("ul", { class: "tasks", "aria-label": "Tasks" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  screen(
    "Tasks",
    h("section", { class: "card", "aria-labelledby": "new-task" }, h("h2", { id: "new-task" }, "New task"), create.element),
    h("section", { "aria-labelledby": "your-tasks" }, h("h2", { id: "your-tasks" }, "Your tasks"), filter.wrap, listError, list, pager),
  );
  const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String((page - 1) * PAGE_SIZE) });
  if (status) query.set("status", status);
  let result;
  try {
    result = await api("GET", `/tasks?${query}`);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showError(listError, error);
    return;
  }
  const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));
  if (page > pages) {
    location.replace(listHash(status, pages)); // past the end, e.g. after deleting the last task of a page
    return;
  }
  if (!result.items.length) {
    list.replaceWith(h("p", { class: "empty" }, status ? "No tasks with this status." : "No tasks yet: add one above."));
  }
  for (const task of result.items) list.append(taskRow(task, listError));
  pager.replaceChildren(
    h(
      "div",
      { class: "pager-row" },
      page > 1 ? h("a", { href: listHash(status, page - 1), rel: "prev" }, "Previous") : null,
      h("span", {}, `Page ${page} of ${pages} · ${result.total} ${result.total === 1 ? "task" : "tasks"}`),
      page < pages ? h("a", { href: listHash(status, page + 1), rel: "next" }, "Next") : null,
    ),
  );
}

function taskRow(task, line) {
  const done = task.status === "done";
  const toggle = action(
    done ? "Reopen" : "Complete",
    async () => {
      const updated = await setStatus(task, done ? "todo" : "done");
      flash = `“${updated.title}” is ${STATUS_LABELS[updated.status].toLowerCase()}.`;
      route();
    },
    { line },
  );
  toggle.setAttribute("aria-label", `${done ? "Reopen" : "Complete"} “${task.title}”`);
  return h(
    "li",
    { class: `task${done ? " is-done" : ""}` },
    h(
      "div",
      { class: "task-main" },
      h("a", { href: `#/tasks/${task.id}`, class: "task-title" }, task.title),
      h("div", { class: "meta" }, statusBadge(task.status), task.due_date ? h("span", {}, `Due ${task.due_date}`) : null),
    ),
    toggle,
  );
}

async function taskScreen(id) {
  let task;
  let attachments;
  try {
    [task, attachments] = await Promise.all([api("GET", `/tasks/${id}`), api("GET", `/tasks/${id}/attachments`)]);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    screen("Task not available", h("p", { class: "form-error", role: "alert" }, error.message), backLink());
    return;
  }
  const title = field({ label: "Title", name: "title", value: task.title, required: true, maxlength: 200 });
  const notes = field({ label: "Notes", name: "notes", type: "textarea", value: task.notes, rows: 4, maxlength: 10000 });
  const due = field({ label: "Due date", name: "due_date", type: "date", value: task.due_date || "" });
  const state = field({
    label: "Status",
    name: "status",
    type: "select",
    value: task.status,
    options: Object.entries(STATUS_LABELS),
  });
  const edit = form({
    label: "Edit task",
    fields: [title, notes, due, state],
    submit: "Save changes",
    onSubmit: async (values) => {
      const body = { ...taskBody(values), status: values.status };
      const saved = await api("PATCH", `/tasks/${id}`, { body });
      flash = `Saved “${saved.title}”.`;
      route();
    },
  });
  const statusError = errorLine();
  const done = task.status === "done";
  const toggle = action(
    done ? "Reopen task" : "Complete task",
    async () => {
      const updated = await setStatus(task, done ? "todo" : "done");
      flash = `“${updated.title}” is ${STATUS_LABELS[updated.status].toLowerCase()}.`;
      route();
    },
    { kind: "primary", line: statusError },
  );
  const completed = task.completed_at ? ` · completed ${formatDate(task.completed_at)}` : "";
  screen(
    task.title,
    backLink(),
    h("p", { class: "meta" }, statusBadge(task.status), h("span", {}, `Created ${formatDate(task.created_at)}${completed}`)),
    h("div", { class: "actions" }, toggle),
    statusError,
    h("section", { class: "card", "aria-labelledby": "edit-task" }, h("h2", { id: "edit-task" }, "Edit"), edit.element),
    attachmentsSection(task, attachments),
    deleteSection(task),
  );
}

function backLink() {
  return h("p", {}, h("a", { href: "#/tasks", class: "back" }, "← All tasks"));
}

function attachmentsSection(task, attachments) {
  const line = errorLine();
  const list = h(
    "ul",
    { class: "files", "aria-label": "Attachments" },
    attachments.map((file) => {
      const get = action(
        "Download",
        () => download(`/tasks/${task.id}/attachments/${file.id}`, file.filename),
        { line },
      );
      get.setAttribute("aria-label", `Download ${file.filename}`);
      return h("li", {}, h("span", { class: "file-name" }, file.filename), h("span", { class: "meta" }, formatSize(file.size_bytes)), get);
    }),
  );
  const picker = field({ label: "File to attach (up to 10 MB)", name: "file", type: "file" });
  const progress = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Upload progress" });
  const upload = action(
    "Upload",
    async () => {
      const file = picker.control.files[0];
      picker.error.hidden = true;
      if (!file) {
        picker.error.textContent = "Choose a file first.";
        picker.error.hidden = false;
        picker.control.focus();
        return;
      }
      if (file.size > MAX_ATTACHMENT_BYTES) {
        picker.error.textContent = "This file is larger than 10 MB, the most Alle keeps per attachment.";
        picker.error.hidden = false;
        picker.control.focus();
        return;
      }
      progress.value = 0;
      progress.hidden = false;
      try {
        const stored = await uploadFile(task.id, file, (fraction) => {
          progress.value = fraction;
        });
        flash = `Uploaded ${stored.filename}.`;
        route();
      } finally {
        progress.hidden = true;
      }
    },
    { kind: "primary", line },
  );
  return h(
    "section",
    { class: "card", "aria-labelledby": "attachments" },
    h("h2", { id: "attachments" }, "Attachments"),
    attachments.length ? list : h("p", { class: "empty" }, "No attachments yet."),
    picker.wrap,
    h("div", { class: "actions" }, upload, progress),
    line,
  );
}

function deleteSection(task) {
  const line = errorLine();
  const area = h("div", { class: "actions" });
  const ask = () => {
    const confirm = action(
      "Yes, delete it",
      async () => {
        await api("DELETE", `/tasks/${task.id}`);
        flash = `Deleted “${task.title}”.`;
        go("#/tasks");
      },
      { kind: "danger", line },
    );
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    cancel.addEventListener("click", () => {
      area.replaceChildren(start);
      start.focus();
    });
    area.replaceChildren(h("p", {}, "Delete this task and its attachments? This cannot be undone."), confirm, cancel);
    confirm.focus();
  };
  const start = h("button", { type: "button", class: "danger" }, "Delete task");
  start.addEventListener("click", ask);
  area.append(start);
  return h("section", { class: "card", "aria-labelledby": "delete-task" }, h("h2", { id: "delete-task" }, "Delete"), area, line);
}

// ---------------------------------------------------------------- reports

function savedReports() {
  try {
    return JSON.parse(sessionStorage.getItem(REPORTS_KEY) || "[]");
  } catch {
    return [];
  }
}

function saveReports(reports) {
  sessionStorage.setItem(REPORTS_KEY, JSON.stringify(reports));
}

function reportsScreen() {
  const line = errorLine();
  const list = h("ul", { class: "reports", "aria-label": "Requested reports" });
  const draw = () => {
    const reports = savedReports();
    list.replaceChildren(
      ...reports.map((report) => {
        const ready = report.status === "done";
        const label = ready
          ? `Ready · ${report.row_count} ${report.row_count === 1 ? "task" : "tasks"}`
          : "Being made…";
        const name = `alle-report-${report.created_at.slice(0, 10)}.csv`;
        return h(
          "li",
          {},
          h("span", {}, `Requested ${formatDate(report.created_at)}`),
          h("span", { class: `badge badge-${ready ? "done" : "in_progress"}` }, label),
          ready ? action("Download CSV", () => download(`/reports/${report.id}/download`, name), { line }) : null,
        );
      }),
    );
    if (!reports.length) list.replaceChildren(h("li", { class: "empty" }, "No reports requested yet."));
  };
  const refresh = async () => {
    const reports = savedReports();
    const waiting = reports.filter((report) => report.status !== "done");
    if (!waiting.length) return;
    try {
      const fresh = await Promise.all(waiting.map((report) => api("GET", `/reports/${report.id}`)));
      const ready = fresh.filter((report) => report.status === "done");
      if (!ready.length) return; // redraw only on a change, so keyboard focus stays where it is
      const byId = Object.fromEntries(ready.map((report) => [report.id, report]));
      saveReports(reports.map((report) => byId[report.id] || report));
      announce(ready.length === 1 ? "A report is ready to download." : `${ready.length} reports are ready.`);
      draw();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showError(line, error);
    }
  };
  const request = action(
    "Request a report",
    async () => {
      const report = await api("POST", "/reports");
      saveReports([report, ...savedReports()]);
      announce("Report requested; it will be ready in a moment.");
      draw();
    },
    { kind: "primary", line },
  );
  screen(
    "Reports",
    h("p", {}, "A report is a CSV file of all your tasks, made in the background. It appears here when it is ready."),
    h("div", { class: "actions" }, request),
    line,
    list,
  );
  draw();
  pollTimer = setInterval(refresh, REPORT_POLL_MS);
}

// ---------------------------------------------------------------- routing

function route() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  const signedIn = Boolean(token());
  if (!signedIn && !["login", "signup"].includes(parts[0])) {
    location.replace("#/login");
    return;
  }
  if (signedIn && (parts.length === 0 || ["login", "signup"].includes(parts[0]))) {
    location.replace("#/tasks");
    return;
  }
  renderNav(parts[0] === "reports" ? "#/reports" : "#/tasks");
  if (parts[0] === "login" || parts[0] === "signup") authScreen(parts[0]);
  else if (parts[0] === "tasks" && parts[1]) taskScreen(parts[1]);
  else if (parts[0] === "reports") reportsScreen();
  else if (parts[0] === "tasks") tasksScreen(params);
  else screen("Page not found", h("p", {}, "There is nothing here. "), backLink());
}

window.addEventListener("hashchange", route);
route();
performance.mark("alle:interactive");
