// wxrules dashboard: changing replies. Who is signed in, the edit form of a rule, the
// draft (its diff, check errors and rule tests), apply, the history and rollback. Runs as a
// plugin of app.js (which calls it with the helpers it shares); everything from the server
// goes into the DOM through textContent / createElement, as there.
'use strict';
window.wxrulesPlugins = (window.wxrulesPlugins || []).concat([(W) => {
const { S, I18N, HOOKS, $, el, clear, t, str, api, httpError, acctQuery, showStatus, timeEl } = W;

Object.assign(I18N.zh, {
  tabHistory: '修改记录', signOut: '退出', addRule: '新增关键词规则',
  whoIs: (n, r) => `${n}（${r === 'editor' ? '编辑' : '只读'}）`,
  readOnly: '只读：服务器没有配置编辑者（WXRULES_ADMIN_TOKEN 或配置文件的 editors:），页面不能修改规则。',
  viewerOnly: '你是只读用户：可以查看和试发，不能修改规则。',
  edit: '编辑', del: '删除', up: '上移', down: '下移', offBadge: '已停用',
  editTitle: n => `编辑规则「${n}」`, addTitle: '新增关键词规则',
  fReplyText: '回复文字', fTemplate: n => `模板 templates/${n}.hbs`, fOneOf: '随机回复之一',
  fNews: n => `图文 ${n}`, fTitle: '标题', fDescription: '描述', fPicUrl: '图片链接', fUrl: '跳转链接',
  fMediaId: 'media_id', fKeywords: '关键词（用逗号或换行分隔）', fMode: '匹配方式', modeExact: '全匹配',
  modeContains: '半匹配（包含）', fEnabled: '启用这条规则', fHours: '生效时段（如 18:00-09:00，多个用逗号）',
  fWeekdays: '生效星期（mon, tue, …；空 = 每天）', fCooldown: '冷却（如 60m；空 = 无）', fName: '规则名',
  addArticle: '添加一篇', removeArticle: '删除这篇', notEditable: '这种回复请在规则文件中修改。',
  keywordsRegex: '正则关键词请在规则文件中修改。', toDraft: '放入草稿', cancel: '取消',
  fieldsHint: '可用字段：', draftTitle: '草稿', draftApply: '检查并生效', draftDiscard: '放弃草稿',
  draftGood: '可以生效', draftBad: '有错误，不能生效', draftTestsOk: n => `规则测试：${n} 条通过`,
  draftTestsBad: (n, m) => `规则测试：${n} 条失败，${m} 条通过`, draftNoChange: '草稿没有改变任何文件',
  applied: d => `已生效，摘要 ${d}`, conflict: '冲突：草稿开始后文件已被修改（手工、其他编辑者或 git pull）。没有写入任何内容。下面是那次修改：',
  startAgain: '放弃草稿，从现在的文件重新开始', rejected: '没有生效：草稿有错误或规则测试失败。',
  tryDraft: '用草稿试发', confirmDelete: n => `从草稿中删除规则「${n}」？`,
  historyHelp: '在页面中做的每次修改；可以回滚到任何一次修改之前。', historyEmpty: '还没有修改记录',
  showDiff: '查看差异', rollback: '回滚到这次修改之前', rolledBack: d => `已回滚，摘要 ${d}`,
  rollbackOf: id => `回滚 ${id}`, caseFailed: '失败的测试', errAt: '位置', takeExpectation: '以新回复作为这条测试的预期',
});
Object.assign(I18N.en, {
  tabHistory: 'History', signOut: 'Sign out', addRule: 'Add keyword rule',
  whoIs: (n, r) => `${n} (${r})`,
  readOnly: 'Read-only: the server has no editors (WXRULES_ADMIN_TOKEN or the config file’s editors:), so the page cannot change rules.',
  viewerOnly: 'You are a viewer: you can look and try messages, not change rules.',
  edit: 'Edit', del: 'Delete', up: 'Up', down: 'Down', offBadge: 'off',
  editTitle: n => `Edit rule “${n}”`, addTitle: 'Add a keyword rule',
  fReplyText: 'Reply text', fTemplate: n => `Template templates/${n}.hbs`, fOneOf: 'One of',
  fNews: n => `Article ${n}`, fTitle: 'Title', fDescription: 'Description', fPicUrl: 'Picture URL', fUrl: 'Link',
  fMediaId: 'media_id', fKeywords: 'Keywords (comma or line separated)', fMode: 'Match', modeExact: 'exact',
  modeContains: 'contains', fEnabled: 'Rule enabled', fHours: 'Active hours (e.g. 18:00-09:00, comma separated)',
  fWeekdays: 'Active weekdays (mon, tue, …; empty = every day)', fCooldown: 'Cooldown (e.g. 60m; empty = none)', fName: 'Rule name',
  addArticle: 'Add an article', removeArticle: 'Remove this article', notEditable: 'Change this kind of reply in the rules file.',
  keywordsRegex: 'Change regex keywords in the rules file.', toDraft: 'Put in draft', cancel: 'Cancel',
  fieldsHint: 'Fields: ', draftTitle: 'Draft', draftApply: 'Check and apply', draftDiscard: 'Discard draft',
  draftGood: 'ready to apply', draftBad: 'has errors: cannot be applied', draftTestsOk: n => `Rule tests: ${n} passed`,
  draftTestsBad: (n, m) => `Rule tests: ${n} failed, ${m} passed`, draftNoChange: 'The draft changes no file',
  applied: d => `Applied, digest ${d}`, conflict: 'Conflict: the files changed since this draft began (by hand, another editor, git pull). Nothing was written. Their change:',
  startAgain: 'Discard the draft and start from the files as they are', rejected: 'Not applied: the draft has errors or failing rule tests.',
  tryDraft: 'Try the draft', confirmDelete: n => `Delete rule “${n}” in the draft?`,
  historyHelp: 'Every change made in the page; roll back to before any of them.', historyEmpty: 'No changes yet',
  showDiff: 'Show diff', rollback: 'Roll back to before this change', rolledBack: d => `Rolled back, digest ${d}`,
  rollbackOf: id => `rollback of ${id}`, caseFailed: 'Failing test', errAt: 'at', takeExpectation: 'Take the new reply as its expectation',
});

// ---- State ------------------------------------------------------------------------------------
// E.me: /api/me; E.source: /api/source of the account; E.changes: the draft's changes;
// E.draft: the server's draft (diff, errors, tests); E.form: the rule being edited.
const E = { me: null, source: null, changes: [], draft: null, form: null, result: null, conflict: null };
const canEdit = () => !!(E.me && Array.isArray(E.me.may_edit) && E.me.may_edit.includes(S.account));
const ruleSource = name => ((E.source && E.source.rules) || []).find(r => r.name === name);
const templateText = name => {
  const f = ((E.source && E.source.templates) || []).find(x => x.name === name);
  return f ? str(f.text) : '';
};

async function loadMe() {
  try {
    const r = await api('GET', '/api/me');
    E.me = r.ok && r.data ? r.data : null;
  } catch (_) { E.me = null; }
  renderWho();
}
async function loadSource() {
  const acct = S.account;
  let source = null;
  try {
    const r = await api('GET', '/api/source?' + acctQuery());
    source = r.ok && r.data ? r.data : null;
  } catch (_) { source = null; }
  // An answer for an account no longer selected is dropped.
  if (acct === S.account) E.source = source;
}
function renderWho() {
  const me = E.me;
  // The account's source is read once the editor and the account are both known.
  if (canEdit() && !E.source && !E.sourceLoading) {
    E.sourceLoading = true;
    void loadSource().then(() => { E.sourceLoading = false; W.loadRules(); });
  }
  $('#who').textContent = me && me.signed_in ? t('whoIs', str(me.name), str(me.role)) : '';
  $('#signout').hidden = !(me && me.signed_in);
  document.body.classList.toggle('can-edit', canEdit());
  const ro = $('#read-only');
  const msg = !me ? '' : (!me.signed_in && !me.editors ? t('readOnly') : (me.signed_in && !canEdit() ? t('viewerOnly') : ''));
  showStatus(ro, msg);
}

// ---- Rule rows ----------------------------------------------------------------------------------
function ruleRow(tr, r, i, all) {
  const name = str(r.name);
  const src = ruleSource(name);
  if (src && src.rule && src.rule.enabled === false) {
    tr.classList.add('rule-off');
    $('.rule-name', tr).append(' ', el('span', { class: 'badge grey', text: t('offBadge') }));
  }
  const cell = el('td', { class: 'edit-only nowrap' });
  if (canEdit()) {
    cell.append(
      el('button', { type: 'button', class: 'btn small', 'data-edit-rule': name, text: t('edit'), onclick: () => openForm(name) }),
      el('button', { type: 'button', class: 'btn small', 'data-move-up': name, title: t('up'), text: '↑', disabled: i === 0, onclick: () => move(all, i, -1) }),
      el('button', { type: 'button', class: 'btn small', 'data-move-down': name, title: t('down'), text: '↓', disabled: i === all.length - 1, onclick: () => move(all, i, 1) }),
      el('button', { type: 'button', class: 'btn small danger', 'data-delete-rule': name, text: t('del'), onclick: () => del(name) }));
  }
  tr.append(cell);
}
function move(all, i, by) {
  const name = str(all[i].name);
  // `before`: the rule it goes in front of; none = the end.
  const before = by < 0 ? str(all[i - 1].name) : (i + 2 < all.length ? str(all[i + 2].name) : null);
  void addChanges(name, ['move_rule'], [{ op: 'move_rule', rule: name, before }]);
}
function del(name) {
  if (!window.confirm(t('confirmDelete', name))) return;
  void addChanges(name, null, [{ op: 'delete_rule', rule: name }]);
}

// ---- The edit form ------------------------------------------------------------------------------
function field(label, input, name) {
  return el('label', { class: 'field', 'data-field': name || null }, el('span', { text: label }), input, el('span', { class: 'field-error bad-text' }));
}
const splitWords = v => str(v).split(/[,，\n]/).map(x => x.trim()).filter(Boolean);
function keywordsOf(rule) {
  const k = rule && rule.when ? rule.when.keyword : undefined;
  if (k === undefined) return { mode: 'exact', words: [], editable: true, had: false };
  if (typeof k === 'string') return { mode: 'exact', words: [k], editable: true, had: true };
  if (Array.isArray(k)) return { mode: 'exact', words: k.map(str), editable: k.every(x => typeof x === 'string'), had: true };
  if (k && typeof k === 'object') {
    const keys = Object.keys(k);
    if (keys.length === 1 && keys[0] === 'contains') {
      const c = Array.isArray(k.contains) ? k.contains : [k.contains];
      return { mode: 'contains', words: c.map(str), editable: true, had: true };
    }
  }
  return { mode: 'regex', words: [], editable: false, had: true };
}
function textarea(name, value, extra) {
  return el('textarea', Object.assign({ name, rows: 3, spellcheck: 'false' }, extra || {}), str(value));
}
// A template's textarea offers the rule's fields as one types `{{`.
function withSuggestions(area, fields) {
  const box = el('div', { class: 'suggest', hidden: true });
  const update = () => {
    const before = area.value.slice(0, area.selectionStart);
    const m = /\{\{\s*([\w.[\]]*)$/.exec(before);
    if (!m) { box.hidden = true; return; }
    const typed = m[1].toLowerCase();
    const hits = fields.filter(f => f.toLowerCase().startsWith(typed)).slice(0, 12);
    clear(box, el('span', { class: 'muted', text: t('fieldsHint') }), hits.map(f => el('button', {
      type: 'button', class: 'btn small', 'data-field-name': f, text: f,
      onclick: () => {
        const at = area.selectionStart;
        const head = area.value.slice(0, at - m[1].length), tail = area.value.slice(at);
        area.value = head + f + '}}' + tail.replace(/^\}\}/, '');
        area.focus();
        area.selectionStart = area.selectionEnd = head.length + f.length + 2;
        box.hidden = true;
      },
    })));
    box.hidden = hits.length === 0;
  };
  area.addEventListener('input', update);
  area.addEventListener('click', update);
  return [area, box];
}
function captureNames(rule) {
  const out = [];
  const walk = v => {
    if (typeof v === 'string') { for (const m of v.matchAll(/\(\?P?<([A-Za-z_]\w*)>/g)) out.push('captures.' + m[1]); }
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(rule && rule.when);
  return out;
}
// The reply part of the form: inputs for what can be edited, and a `collect` giving the
// changes they make.
function replyPart(name, rule) {
  const reply = rule.reply && typeof rule.reply === 'object' ? rule.reply : null;
  const fields = ((E.source && E.source.fields && E.source.fields[name]) || []).concat(captureNames(rule));
  const same = v => JSON.stringify(v);
  if (reply && typeof reply.text === 'string') {
    const area = textarea('text', reply.text);
    return { nodes: [field(t('fReplyText'), area, 'reply')], collect: () => area.value === reply.text ? [] : [{ op: 'set_reply', rule: name, reply: { text: area.value } }] };
  }
  if (reply && reply.text && typeof reply.text === 'object' && typeof reply.text.template === 'string') {
    const file = reply.text.template;
    const before = templateText(file);
    const [area, box] = withSuggestions(textarea('template', before, { rows: 6 }), fields);
    return {
      nodes: [field(t('fTemplate', file), el('div', null, area, box), 'reply')],
      collect: () => area.value === before ? [] : [{ op: 'set_template', file, text: area.value }],
    };
  }
  if (reply && Array.isArray(reply.one_of)) {
    const areas = reply.one_of.map((r, i) => r && typeof r.text === 'string' ? textarea('one_of', r.text, { 'data-index': i }) : null);
    return {
      nodes: areas.map((a, i) => a ? field(`${t('fOneOf')} ${i + 1}`, a, 'reply') : el('p', { class: 'muted', text: `${t('fOneOf')} ${i + 1}: ${t('notEditable')}` })),
      collect: () => {
        const next = reply.one_of.map((r, i) => areas[i] ? Object.assign({}, r, { text: areas[i].value }) : r);
        return same(next) === same(reply.one_of) ? [] : [{ op: 'set_reply', rule: name, reply: { one_of: next } }];
      },
    };
  }
  if (reply && Array.isArray(reply.news)) {
    const list = el('div', { class: 'articles' });
    const article = a => el('fieldset', { class: 'article' },
      ['title', 'description', 'pic_url', 'url'].map(k => field(t({ title: 'fTitle', description: 'fDescription', pic_url: 'fPicUrl', url: 'fUrl' }[k]), el('input', { name: k, value: str(a[k]) }), 'reply')),
      el('button', { type: 'button', class: 'btn small', text: t('removeArticle'), onclick: ev => ev.currentTarget.closest('fieldset').remove() }));
    reply.news.forEach(a => list.append(article(a || {})));
    const add = el('button', { type: 'button', class: 'btn small', text: t('addArticle'), onclick: () => list.append(article({})) });
    return {
      nodes: [list, add],
      collect: () => {
        const next = [...list.querySelectorAll('fieldset')].map(fs => {
          const a = {};
          for (const k of ['title', 'description', 'pic_url', 'url']) { const v = fs.querySelector(`[name=${k}]`).value; if (v) a[k] = v; }
          return a;
        });
        return same(next) === same(reply.news) ? [] : [{ op: 'set_reply', rule: name, reply: { news: next } }];
      },
    };
  }
  for (const kind of ['image', 'voice', 'video']) {
    if (reply && reply[kind] && typeof reply[kind] === 'object' && typeof reply[kind].media_id === 'string') {
      const keys = kind === 'video' ? ['media_id', 'title', 'description'] : ['media_id'];
      const inputs = keys.map(k => el('input', { name: k, value: str(reply[kind][k]) }));
      return {
        nodes: keys.map((k, i) => field(k === 'media_id' ? t('fMediaId') : t(k === 'title' ? 'fTitle' : 'fDescription'), inputs[i], 'reply')),
        collect: () => {
          const next = Object.assign({}, reply[kind]);
          keys.forEach((k, i) => { if (inputs[i].value) next[k] = inputs[i].value; else delete next[k]; });
          return same(next) === same(reply[kind]) ? [] : [{ op: 'set_reply', rule: name, reply: { [kind]: next } }];
        },
      };
    }
  }
  return { nodes: [el('p', { class: 'muted', text: t('notEditable') })], collect: () => [] };
}
function openForm(name) {
  const src = ruleSource(name);
  if (!src) return;
  const rule = src.rule || {};
  const reply = replyPart(name, rule);
  const kw = keywordsOf(rule);
  const words = textarea('keywords', kw.words.join(', '), { rows: 2 });
  const mode = el('select', { name: 'keyword_mode' },
    el('option', { value: 'exact', text: t('modeExact') }), el('option', { value: 'contains', text: t('modeContains') }));
  mode.value = kw.mode === 'contains' ? 'contains' : 'exact';
  const enabled = el('input', { type: 'checkbox', name: 'enabled' });
  enabled.checked = rule.enabled !== false;
  const active = rule.active && typeof rule.active === 'object' ? rule.active : null;
  const hours = el('input', { name: 'active_hours', value: active && Array.isArray(active.hours) ? active.hours.join(', ') : '' });
  const weekdays = el('input', { name: 'active_weekdays', value: active && Array.isArray(active.weekdays) ? active.weekdays.join(', ') : '' });
  const cooldown = el('input', { name: 'cooldown', value: str(rule.cooldown) });
  const form = el('form', { id: 'edit-rule', class: 'card edit-form', 'data-rule': name, autocomplete: 'off' },
    el('h3', { text: t('editTitle', name) }),
    reply.nodes,
    kw.editable && kw.had ? el('div', { class: 'row' }, field(t('fKeywords'), words, 'keywords'), field(t('fMode'), mode, 'keywords')) : null,
    kw.editable ? null : el('p', { class: 'muted', text: t('keywordsRegex') }),
    el('label', { class: 'check', 'data-field': 'enabled' }, enabled, el('span', { text: t('fEnabled') })),
    el('div', { class: 'row' }, field(t('fHours'), hours, 'active'), field(t('fWeekdays'), weekdays, 'active'), field(t('fCooldown'), cooldown, 'cooldown')),
    el('div', { class: 'actions' },
      el('button', { type: 'submit', class: 'btn primary', id: 'edit-save', text: t('toDraft') }),
      el('button', { type: 'button', class: 'btn', text: t('cancel'), onclick: closeForm })));
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const changes = reply.collect();
    if (kw.editable && kw.had) {
      const next = splitWords(words.value);
      if (next.join('\n') !== kw.words.join('\n') || mode.value !== kw.mode) {
        changes.push(Object.assign({ op: 'set_keywords', rule: name }, mode.value === 'contains' ? { contains: next } : { keyword: next }));
      }
    }
    if (enabled.checked !== (rule.enabled !== false)) changes.push({ op: 'set_enabled', rule: name, enabled: enabled.checked });
    const h = splitWords(hours.value), w = splitWords(weekdays.value);
    const nextActive = h.length || w.length ? Object.assign({}, active || {}, { hours: h.length ? h : undefined, weekdays: w.length ? w : undefined }) : null;
    if (nextActive) { for (const k of Object.keys(nextActive)) if (nextActive[k] === undefined) delete nextActive[k]; }
    if (JSON.stringify(nextActive) !== JSON.stringify(active)) changes.push({ op: 'set_active', rule: name, active: nextActive });
    const cd = cooldown.value.trim();
    if (cd !== str(rule.cooldown)) changes.push({ op: 'set_cooldown', rule: name, cooldown: cd || null });
    void addChanges(name, ['set_reply', 'set_template', 'set_keywords', 'set_enabled', 'set_active', 'set_cooldown'], changes);
  });
  E.form = name;
  const box = $('#editor');
  clear(box, form);
  box.hidden = false;
  markFieldErrors();
  box.scrollIntoView({ block: 'nearest' });
}
function closeForm() {
  E.form = null;
  clear($('#editor'));
  $('#editor').hidden = true;
}
function openAddForm() {
  const name = el('input', { name: 'name', required: true, pattern: '[^\\s]+' });
  const words = textarea('keywords', '', { rows: 2, required: true });
  const mode = el('select', { name: 'keyword_mode' },
    el('option', { value: 'exact', text: t('modeExact') }), el('option', { value: 'contains', text: t('modeContains') }));
  const text = textarea('text', '', { required: true });
  const form = el('form', { id: 'add-rule-form', class: 'card edit-form', autocomplete: 'off' },
    el('h3', { text: t('addTitle') }),
    el('div', { class: 'row' }, field(t('fName'), name, 'name'), field(t('fKeywords'), words, 'keywords'), field(t('fMode'), mode, 'keywords')),
    field(t('fReplyText'), text, 'reply'),
    el('div', { class: 'actions' },
      el('button', { type: 'submit', class: 'btn primary', id: 'add-save', text: t('toDraft') }),
      el('button', { type: 'button', class: 'btn', text: t('cancel'), onclick: closeForm })));
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const n = name.value.trim(), w = splitWords(words.value);
    if (!n || !w.length) return;
    const when = { keyword: mode.value === 'contains' ? { contains: w } : w };
    void addChanges(n, ['add_rule'], [{ op: 'add_rule', rule: { name: n, when, reply: { text: text.value } }, before: null }]);
  });
  E.form = null;
  clear($('#editor'), form);
  $('#editor').hidden = false;
}

// ---- The draft ----------------------------------------------------------------------------------
// The rule's earlier changes of these ops are replaced by `changes` (`ops` null: all of them).
async function addChanges(rule, ops, changes) {
  E.changes = E.changes.filter(c => {
    const of = c.op === 'add_rule' ? str(c.rule && c.rule.name) : str(c.rule || c.file || c.case);
    if (c.op === 'set_template') return !changes.some(n => n.op === 'set_template' && n.file === c.file);
    return of !== rule || (ops && !ops.includes(c.op));
  });
  E.changes.push(...changes);
  E.result = null; E.conflict = null;
  await makeDraft();
}
async function makeDraft() {
  if (!E.changes.length) { E.draft = null; renderDraft(); return; }
  if (!E.source) await loadSource();
  const base = E.source ? E.source.digest : '';
  let r;
  try {
    r = await api('POST', '/api/drafts?' + acctQuery(), { base, changes: E.changes });
  } catch (e) { E.draft = { failed: e.message }; renderDraft(); return; }
  E.draft = r.ok && r.data ? r.data : { failed: httpError(r) };
  renderDraft();
}
function markFieldErrors() {
  for (const n of document.querySelectorAll('#editor .field-error')) n.textContent = '';
  const errors = (E.draft && Array.isArray(E.draft.errors)) ? E.draft.errors : [];
  const form = $('#edit-rule');
  if (!form) return;
  for (const e of errors) {
    if (e.rule && e.rule !== form.dataset.rule) continue;
    const m = str(e.message).toLowerCase();
    const where = m.includes('keyword') ? 'keywords' : m.includes('cooldown') ? 'cooldown' : m.includes('active') || m.includes('hours') || m.includes('weekday') ? 'active' : 'reply';
    const target = form.querySelector(`[data-field="${where}"] .field-error`) || form.querySelector('.field-error');
    if (target) target.textContent = `${str(e.file)}:${e.line}:${e.column}: ${str(e.message)}`;
  }
}
function renderDraft() {
  const box = $('#draft');
  const d = E.draft;
  box.hidden = !d && !E.result && !E.conflict;
  const state = $('#draft-state');
  clear($('#draft-changes'), E.changes.map(c => el('li', { class: 'mono', text: `${c.op} ${c.op === 'add_rule' ? str(c.rule && c.rule.name) : str(c.rule || c.file || c.case)}` })));
  const errBox = $('#draft-errors'), testsBox = $('#draft-tests');
  clear(errBox); clear(testsBox);
  $('#draft-diff').textContent = d && d.diff ? str(d.diff) : '';
  const apply = $('#draft-apply');
  apply.disabled = !(d && d.good && d.draft);
  if (E.conflict) {
    clear(errBox, el('p', { class: 'bad-text', text: t('conflict') }), el('pre', { class: 'diff', id: 'conflict-diff', text: str(E.conflict.diff) }),
      el('button', { type: 'button', class: 'btn', id: 'start-again', text: t('startAgain'), onclick: () => void startAgain() }));
  }
  if (!d) { clear(state); showResult(); return; }
  if (d.failed) {
    clear(state, W.badge(t('draftBad'), 'bad'));
    errBox.append(el('p', { class: 'bad-text draft-error', text: d.failed }));
    showResult();
    return;
  }
  clear(state, d.good ? W.badge(t('draftGood'), 'ok') : W.badge(t('draftBad'), 'bad'));
  if (!d.diff) errBox.append(el('p', { class: 'muted', text: t('draftNoChange') }));
  for (const e of d.errors || []) {
    errBox.append(el('p', { class: 'bad-text draft-error', 'data-rule': e.rule || null },
      el('span', { class: 'mono', text: `${str(e.file)}:${e.line}:${e.column}` }), ' ', e.rule ? el('strong', { text: str(e.rule) + ': ' }) : null, str(e.message)));
  }
  const tests = d.tests || { passed: 0, failed: [] };
  const failed = Array.isArray(tests.failed) ? tests.failed : [];
  if (failed.length || tests.passed) {
    testsBox.append(el('p', { class: failed.length ? 'bad-text' : 'muted', text: failed.length ? t('draftTestsBad', failed.length, tests.passed) : t('draftTestsOk', tests.passed) }));
    for (const c of failed) {
      const name = str(c.name);
      testsBox.append(el('div', { class: 'failed-case', 'data-case': name }, el('strong', { text: `${t('caseFailed')}: ${name}` }), el('pre', { text: str(c.message) }),
        el('button', { type: 'button', class: 'btn small', 'data-take-expectation': name, text: t('takeExpectation'),
          onclick: () => void addChanges(name, ['expect_case'], [{ op: 'expect_case', case: name }]) })));
    }
  }
  markFieldErrors();
  showResult();
}
function showResult() {
  showStatus($('#draft-result'), E.result || '');
}
async function applyDraft() {
  const d = E.draft;
  if (!d || !d.draft) return;
  const btn = $('#draft-apply');
  btn.disabled = true;
  let r;
  try { r = await api('POST', `/api/drafts/${encodeURIComponent(d.draft)}/apply`, {}); } catch (e) { E.result = e.message; renderDraft(); return; }
  if (r.status === 200 && r.data) {
    E.changes = []; E.draft = null; E.conflict = null;
    E.result = t('applied', str(r.data.digest));
    closeForm();
    await loadSource();
    renderDraft();
    W.loadRules();
    void W.loadOverview();
    return;
  }
  if (r.status === 409 && r.data) { E.conflict = r.data; E.result = null; renderDraft(); return; }
  if (r.status === 422 && r.data) { E.result = t('rejected'); renderDraft(); return; }
  E.result = httpError(r);
  renderDraft();
}
async function startAgain() {
  E.changes = []; E.draft = null; E.conflict = null; E.result = null;
  closeForm();
  await loadSource();
  renderDraft();
  W.loadRules();
}
function discard() {
  E.changes = []; E.draft = null; E.conflict = null; E.result = null;
  closeForm();
  renderDraft();
}

// ---- History ------------------------------------------------------------------------------------
async function loadHistory() {
  const list = $('#history');
  let r;
  try { r = await api('GET', '/api/history?' + acctQuery()); } catch (e) { showStatus($('#history-status'), e.message); return; }
  if (!r.ok || !r.data) { showStatus($('#history-status'), httpError(r)); return; }
  const changes = Array.isArray(r.data.changes) ? r.data.changes : [];
  showStatus($('#history-status'), changes.length ? '' : t('historyEmpty'));
  clear(list, changes.map(c => {
    const id = str(c.id);
    const diff = el('pre', { class: 'diff', hidden: true });
    return el('li', { 'data-change': id },
      el('div', { class: 'row' },
        timeEl(c.at), el('strong', { text: str(c.editor) }),
        el('span', { class: 'mono', text: (Array.isArray(c.rules) ? c.rules : []).map(str).join(', ') }),
        c.rollback_of ? W.badge(t('rollbackOf', str(c.rollback_of)), 'grey') : null,
        el('span', { class: 'mono muted', text: `${str(c.digest_before)} → ${str(c.digest_after)}` }),
        el('div', { class: 'spacer' }),
        el('button', { type: 'button', class: 'btn small', 'data-show-diff': id, text: t('showDiff'), onclick: () => void showDiff(id, diff) }),
        canEdit() ? el('button', { type: 'button', class: 'btn small danger', 'data-rollback': id, text: t('rollback'), onclick: () => void rollback(id) }) : null),
      diff);
  }));
}
async function showDiff(id, pre) {
  if (!pre.hidden) { pre.hidden = true; return; }
  const r = await api('GET', `/api/history/${encodeURIComponent(id)}?` + acctQuery());
  pre.textContent = r.ok && r.data ? str(r.data.diff) : httpError(r);
  pre.hidden = false;
}
async function rollback(id) {
  await loadSource();
  const base = E.source ? E.source.digest : '';
  const r = await api('POST', `/api/history/${encodeURIComponent(id)}/rollback?` + acctQuery(), { base });
  const msg = r.status === 200 && r.data ? t('rolledBack', str(r.data.digest)) : httpError(r);
  showStatus($('#history-status'), msg);
  await loadSource();
  W.loadRules();
  void W.loadOverview();
  await loadHistory();
  showStatus($('#history-status'), msg);
}

// ---- Hooks into the page ------------------------------------------------------------------------
HOOKS.ruleRow = ruleRow;
// The account is known once the overview is in (it may come after /api/me).
HOOKS.top = renderWho;
HOOKS.tryQuery = () => {
  const use = $('#try-use-draft');
  return E.draft && E.draft.draft && E.draft.good !== undefined && use && use.checked && !E.draft.errors?.length
    ? '&draft=' + encodeURIComponent(E.draft.draft) : '';
};
HOOKS.account = () => { E.changes = []; E.draft = null; E.source = null; E.conflict = null; E.result = null; closeForm(); renderDraft(); renderWho(); };
HOOKS.view = view => {
  if (view === 'history') void loadHistory();
  const use = $('#try-use-draft-wrap');
  if (use) use.hidden = !(E.draft && E.draft.draft);
};
HOOKS.lang = () => { renderWho(); renderDraft(); if (E.form) openForm(E.form); };

document.addEventListener('DOMContentLoaded', () => {
  $('#add-rule').addEventListener('click', openAddForm);
  $('#draft-apply').addEventListener('click', () => void applyDraft());
  $('#draft-discard').addEventListener('click', discard);
  $('#history-refresh').addEventListener('click', () => void loadHistory());
  $('#signout').addEventListener('click', () => { W.store('session', 'wxrules.token', null); window.location.reload(); });
  const actions = $('#try .actions');
  if (actions) {
    const box = el('input', { type: 'checkbox', id: 'try-use-draft', checked: true });
    actions.append(el('label', { class: 'check', id: 'try-use-draft-wrap', hidden: true }, box, el('span', { text: t('tryDraft') })));
  }
  void loadMe();
});
}]);
