// wxrules dashboard: vanilla ES2020, no build step, no external requests.
// Everything from the server goes into the DOM through textContent / createElement.
'use strict';
(() => {

// ---- Strings --------------------------------------------------------------------------------
const I18N = {
  zh: {
    title: 'wxrules 规则控制台', brandSub: '规则控制台', account: '公众号', version: v => 'v' + v,
    reload: '重新加载规则', reloading: '正在重新加载…', langBtn: 'English', langTitle: 'Switch to English',
    tabRules: '规则', tabTry: '试一试', tabPushes: '最近消息', tabMenu: '菜单',
    menuNone: '这个公众号没有菜单文件（menu.yaml）。', menuDefault: '默认菜单',
    menuMatch: r => '个性化菜单：' + [r.tag_id ? '标签 ' + r.tag_id : '', r.client_platform_type ? ({ 1: 'iOS', 2: 'Android', 3: '其他系统' })[r.client_platform_type] || r.client_platform_type : ''].filter(Boolean).join('，'),
    menuNoRule: '没有规则回复', menuHits: n => `${n} 次`, menuOpens: '打开',
    refresh: '刷新', loading: '正在加载…', ok: '确定', dismiss: '关闭', none: '—',
    errNetwork: '无法连接服务器', errHttp: s => `服务器返回 HTTP ${s}`,
    statusBad: s => `状态：${({ degraded: '上次重载被拒绝', unserved: '无法加载，未在服务' })[s] || s}`,
    lrLabel: '上次重新加载', lrNone: '尚未重新加载', lrLoadedAt: t => `规则加载于 ${t}`,
    lrErrors: n => `${n} 个错误`, lrNoErrors: '无错误', lrShow: '点击查看错误',
    // reload outcomes
    ro_applied: '已生效', ro_rejected: '被拒绝', ro_timed_out: '超时', ro_partial: '部分生效', ro_failed: '失败',
    ro_unchanged: '无变化', ro_added: '新增账号', ro_removed: '已移除',
    reloadUnchanged: (n) => `${n} 个账号的文件没有变化，未重新加载`, reloadConfigErrors: '配置文件有错误，账号列表保持不变：',
    reloadAccountAdded: (n) => `新账号已上线：${n} 条规则`, reloadAccountRemoved: '账号已移除，不再接收消息',
    // push / try outcomes
    po_replied: '已回复', po_ignored: '不回复', po_no_match: '无匹配', po_error: '出错', po_retry: '重试',
    po_deadline: '超时', po_refused: '拒绝',
    // what follows a push: its call, its late reply, its customer-service messages
    af_call: o => `调用失败：${o}`, af_late_waiting: '延迟回复：等待服务', af_late_queued: '延迟回复：已排队',
    af_late_nothing: '延迟回复：无', af_late_failed: '延迟回复：渲染失败',
    af_queued: n => `客服消息排队中 ${n}`, af_sent: n => `客服消息已发送 ${n}`,
    af_failed: (n, code) => `客服消息发送失败 ${n}` + (code != null ? `（${code}）` : ''),
    af_refused: n => `客服消息被拒 ${n}`, af_kept: n => `客服消息额度已满，留待用户下条消息 ${n}`,
    // reply kinds
    k_text: '文本', k_news: '图文', k_image: '图片', k_voice: '语音', k_video: '视频', k_music: '音乐',
    k_transfer: '转客服', k_transfer_customer_service: '转客服', k_ignore: '不回复', k_one_of: '随机回复',
    k_call: '调用服务', k_late: '延迟回复', k_template: '模板',
    // message kinds (pushes)
    m_text: '文本', m_image: '图片', m_voice: '语音', m_video: '视频', m_shortvideo: '小视频',
    m_location: '位置', m_link: '链接', m_file: '文件', m_event: '事件',
    filterPh: '筛选：名称、条件、回复类型、文件', rulesCount: n => `${n} 条规则`,
    rulesCountF: (m, n) => `显示 ${m} / ${n} 条规则`, rulesNone: '没有符合筛选的规则', rulesEmpty: '还没有规则',
    rulesHint: '规则从上到下依次尝试，第一条条件成立的规则负责回复。',
    colOrder: '#', colName: '规则名', colWhen: '触发条件', colReply: '回复', colLocation: '位置',
    colHits: '命中', colLastHit: '最近命中', colTime: '时间', colAccount: '公众号', colKind: '类型',
    colKeyword: '关键词', colUser: '用户', colRule: '规则', colOutcome: '结果', colUs: '耗时 (µs)',
    metaPath: '接收路径', metaTemplates: '模板', metaDigest: '摘要', metaLoaded: '加载于',
    metaReloads: (a, r) => `重新加载：成功 ${a} 次，拒绝 ${r} 次`,
    tryText: '用户发送的文字', tryTextPh: '例如：价格', tryEvent: '或者选择事件', tryNoEvent: '（不选，发送文字）',
    tryEventKey: 'EventKey（可选）', tryEventKeyPh: '例如 CONTACT_US、qrscene_123',
    tryXml: '粘贴 XML（一整条推送）', trySubmit: '发送', trySending: '正在发送…',
    tryPriority: '优先级：XML ＞ 事件 ＞ 文字。试发不会回复任何用户，也不会调用外部服务。',
    tryEmpty: '请输入文字、选择事件或粘贴 XML。', tryIntro: '输入一条消息，看看哪条规则会回复、用户会看到什么。',
    tryMatched: '命中规则', tryNoMatch: '没有规则匹配', tryCriteria: '条件', tryMessageHas: '消息中', tryCaptures: '捕获的内容',
    tryOutcome: '结果', tryPreview: '用户看到的回复', tryRaw: '原始 XML 回答',
    tryIgnored: '不回复（回答 success）', tryTransfer: '转接客服', tryTransferTo: a => `转接客服：${a}`,
    tryUserEvent: (e, k) => k ? `用户触发事件 ${e}（${k}）` : `用户触发事件 ${e}`, tryUserXml: '粘贴的 XML 推送',
    tryCall: '调用服务', tryCallNote: '试发时仪表盘不会真正发出这个请求。', tryTimeout: ms => `超时 ${ms} ms`,
    tryStubbed: '（已模拟）', tryHolding: '等待时先回复', trySends: '随后通过客服消息发送',
    tryErrorTitle: '出错',
    tryState: '从对话状态开始', tryNoState: '（不在任何状态）', tryVars: '状态变量（可选，每行一个 名称=值）',
    tryVarsBad: l => `状态变量应写成 名称=值：${l}`, tryVarsNoState: '请先选择对话状态，再填写状态变量。',
    tryStateTitle: '对话状态', tryStateBefore: '之前', tryStateAfter: '之后', tryStateNone: '无',
    statesTitle: '对话状态', statesUsers: '位用户', statesNone: '规则没有设置任何状态。',
    statesHelp: '此刻处于各个状态的用户数（不显示是哪些用户）；状态过期后不再计入。',
    mediaId: 'media_id', thumb: '缩略图 media_id', hq: '高品质', noPic: '无图片', readMore: '阅读全文',
    pushesInfo: n => `每 3 秒自动刷新 · 最多保留最近 ${n} 条`, pushesUpdated: t => `更新于 ${t}`,
    pushesEmpty: '还没有消息',
    reloadTitle: '重新加载结果', reloadApplied: n => `已重新加载：${n} 条规则`,
    reloadRejected: '重新加载失败，旧规则继续生效', reloadTimedOut: '重新加载超时，旧规则继续生效',
    reloadFailed: '重新加载失败，旧规则继续生效', reloadAdded: '新增', reloadRemoved: '删除', reloadChanged: '修改',
    reloadNoChange: '规则没有变化', reloadTemplates: '模板已更改', listSep: '、',
    colon: '：', paren: (x) => `（${x}）`,
    tokenTitle: '需要管理令牌', tokenHelp: '服务器设置了 WXRULES_ADMIN_TOKEN。令牌只保存在当前标签页。',
    tokenLabel: '令牌', tokenBad: '令牌无效，请重新输入。',
    ev_subscribe: '关注', ev_unsubscribe: '取消关注', ev_SCAN: '已关注用户扫码', ev_CLICK: '点击菜单',
    ev_VIEW: '点击菜单链接', ev_LOCATION: '上报地理位置', ev_scancode_push: '扫码推事件',
    ev_scancode_waitmsg: '扫码推事件且弹出“消息接收中”', ev_pic_sysphoto: '系统拍照发图',
    ev_pic_photo_or_album: '拍照或者相册发图', ev_pic_weixin: '微信相册发图', ev_location_select: '选择地理位置',
    ev_TEMPLATESENDJOBFINISH: '模板消息发送结果', ev_MASSSENDJOBFINISH: '群发结果',
    ev_subscribe_msg_popup_event: '订阅通知弹窗', ev_subscribe_msg_change_event: '订阅通知管理',
    ev_subscribe_msg_sent_event: '订阅通知发送结果', ev_view_miniprogram: '菜单跳转小程序',
  },
  en: {
    title: 'wxrules dashboard', brandSub: 'rules console', account: 'Account', version: v => 'v' + v,
    reload: 'Reload rules', reloading: 'Reloading…', langBtn: '中文', langTitle: '切换到中文',
    tabRules: 'Rules', tabTry: 'Try a message', tabPushes: 'Recent pushes', tabMenu: 'Menu',
    menuNone: 'This account has no menu file (menu.yaml).', menuDefault: 'Default menu',
    menuMatch: r => 'Conditional menu: ' + [r.tag_id ? 'tag ' + r.tag_id : '', r.client_platform_type ? ({ 1: 'iOS', 2: 'Android', 3: 'other systems' })[r.client_platform_type] || r.client_platform_type : ''].filter(Boolean).join(', '),
    menuNoRule: 'no rule answers', menuHits: n => `${n} hits`, menuOpens: 'opens',
    refresh: 'Refresh', loading: 'Loading…', ok: 'OK', dismiss: 'Dismiss', none: '—',
    errNetwork: 'Cannot reach the server', errHttp: s => `The server answered HTTP ${s}`,
    statusBad: s => `status: ${({ degraded: 'last reload refused', unserved: 'cannot be loaded, not served' })[s] || s}`,
    lrLabel: 'Last reload', lrNone: 'no reload yet', lrLoadedAt: t => `rules loaded at ${t}`,
    lrErrors: n => (n === 1 ? '1 error' : `${n} errors`), lrNoErrors: 'no errors', lrShow: 'Click to see the errors',
    ro_applied: 'applied', ro_rejected: 'rejected', ro_timed_out: 'timed out', ro_partial: 'partial', ro_failed: 'failed',
    ro_unchanged: 'unchanged', ro_added: 'added', ro_removed: 'removed',
    reloadUnchanged: (n) => `${n} account(s) unchanged, not reloaded`, reloadConfigErrors: 'The config file has errors; the accounts stay as they were:',
    reloadAccountAdded: (n) => `New account serving: ${n} rules`, reloadAccountRemoved: 'Account removed; it no longer receives pushes',
    po_replied: 'replied', po_ignored: 'ignored', po_no_match: 'no match', po_error: 'error', po_retry: 'retry',
    af_call: o => `call failed: ${o}`, af_late_waiting: 'late reply: waiting for the service', af_late_queued: 'late reply: queued',
    af_late_nothing: 'late reply: none', af_late_failed: 'late reply: failed to render',
    af_queued: n => `${n} queued`, af_sent: n => `${n} sent`,
    af_failed: (n, code) => `${n} failed` + (code != null ? ` (${code})` : ''),
    af_refused: n => `${n} refused`, af_kept: n => `${n} kept for the next message (quota spent)`,
    po_deadline: 'deadline', po_refused: 'refused',
    k_text: 'text', k_news: 'news', k_image: 'image', k_voice: 'voice', k_video: 'video', k_music: 'music',
    k_transfer: 'to customer service', k_transfer_customer_service: 'to customer service', k_ignore: 'no reply',
    k_one_of: 'one of (random)', k_call: 'call a service', k_late: 'late reply', k_template: 'template',
    m_text: 'text', m_image: 'image', m_voice: 'voice', m_video: 'video', m_shortvideo: 'short video',
    m_location: 'location', m_link: 'link', m_file: 'file', m_event: 'event',
    filterPh: 'Filter: name, condition, reply kind, file', rulesCount: n => (n === 1 ? '1 rule' : `${n} rules`),
    rulesCountF: (m, n) => `${m} of ${n} rules`, rulesNone: 'No rule matches the filter', rulesEmpty: 'No rules',
    rulesHint: 'Rules are tried from top to bottom; the first whose condition holds answers.',
    colOrder: '#', colName: 'Name', colWhen: 'When', colReply: 'Reply', colLocation: 'Location',
    colHits: 'Hits', colLastHit: 'Last hit', colTime: 'Time', colAccount: 'Account', colKind: 'Kind',
    colKeyword: 'Keyword', colUser: 'User', colRule: 'Rule', colOutcome: 'Outcome', colUs: 'µs',
    metaPath: 'Path', metaTemplates: 'Templates', metaDigest: 'Digest', metaLoaded: 'Loaded',
    metaReloads: (a, r) => `Reloads: ${a} applied, ${r} rejected`,
    tryText: 'Text the user sends', tryTextPh: 'e.g. 价格', tryEvent: 'Or pick an event', tryNoEvent: '(none — send the text)',
    tryEventKey: 'EventKey (optional)', tryEventKeyPh: 'e.g. CONTACT_US, qrscene_123',
    tryXml: 'Paste XML (a whole push)', trySubmit: 'Send', trySending: 'Sending…',
    tryPriority: 'Priority: XML > event > text. Nothing is sent to users or to external services.',
    tryEmpty: 'Enter a text, pick an event or paste XML.', tryIntro: 'Type a message to see which rule answers and what the user sees.',
    tryMatched: 'Matched rule', tryNoMatch: 'No rule matched', tryCriteria: 'Criteria', tryMessageHas: 'the message has', tryCaptures: 'Captures',
    tryOutcome: 'Outcome', tryPreview: 'What the user sees', tryRaw: 'Raw XML answer',
    tryIgnored: 'No reply (answers success)', tryTransfer: 'Transferred to customer service',
    tryTransferTo: a => `Transferred to customer service: ${a}`,
    tryUserEvent: (e, k) => k ? `User event ${e} (${k})` : `User event ${e}`, tryUserXml: 'Pasted XML push',
    tryCall: 'Service call', tryCallNote: 'The dashboard does not make this call.', tryTimeout: ms => `timeout ${ms} ms`,
    tryStubbed: '(stubbed)', tryHolding: 'Holding reply', trySends: 'Then sent through the customer-service API',
    tryErrorTitle: 'Error',
    tryState: 'Start in state', tryNoState: '(in no state)', tryVars: 'State vars (optional, one name=value a line)',
    tryVarsBad: l => `A state var is written name=value: ${l}`, tryVarsNoState: 'Pick a conversation state for the vars.',
    tryStateTitle: 'Conversation state', tryStateBefore: 'before', tryStateAfter: 'after', tryStateNone: 'none',
    statesTitle: 'Conversations', statesUsers: n => (Number(n) === 1 ? 'user' : 'users'), statesNone: 'The rules set no state.',
    statesHelp: 'Users in each state now (never which ones); a state stops counting when it expires.',
    mediaId: 'media_id', thumb: 'thumb media_id', hq: 'HQ', noPic: 'no picture', readMore: 'Read more',
    pushesInfo: n => `Auto-refresh every 3 s · keeps the last ${n}`, pushesUpdated: t => `updated ${t}`,
    pushesEmpty: 'No pushes yet',
    reloadTitle: 'Reload result', reloadApplied: n => `Reloaded: ${n} rules`,
    reloadRejected: 'Reload rejected; the previous rules keep serving',
    reloadTimedOut: 'Reload timed out; the previous rules keep serving',
    reloadFailed: 'Reload failed; the previous rules keep serving', reloadAdded: 'Added', reloadRemoved: 'Removed',
    reloadChanged: 'Changed', reloadNoChange: 'No rule changed', reloadTemplates: 'Templates changed', listSep: ', ',
    colon: ': ', paren: (x) => ` (${x})`,
    tokenTitle: 'Admin token required', tokenHelp: 'The server has WXRULES_ADMIN_TOKEN set. The token is kept in this tab only.',
    tokenLabel: 'Token', tokenBad: 'Invalid token, try again.',
    ev_subscribe: 'follow', ev_unsubscribe: 'unfollow', ev_SCAN: 'scan (already following)', ev_CLICK: 'menu click',
    ev_VIEW: 'menu link', ev_LOCATION: 'location report', ev_scancode_push: 'scan code (push)',
    ev_scancode_waitmsg: 'scan code (wait message)', ev_pic_sysphoto: 'camera photo',
    ev_pic_photo_or_album: 'camera or album', ev_pic_weixin: 'WeChat album', ev_location_select: 'location picker',
    ev_TEMPLATESENDJOBFINISH: 'template message result', ev_MASSSENDJOBFINISH: 'mass send result',
    ev_subscribe_msg_popup_event: 'subscription popup', ev_subscribe_msg_change_event: 'subscription change',
    ev_subscribe_msg_sent_event: 'subscription sent', ev_view_miniprogram: 'menu mini program',
  },
};
const EVENTS = ['subscribe', 'unsubscribe', 'SCAN', 'CLICK', 'VIEW', 'LOCATION', 'scancode_push',
  'scancode_waitmsg', 'pic_sysphoto', 'pic_photo_or_album', 'pic_weixin', 'location_select',
  'TEMPLATESENDJOBFINISH', 'MASSSENDJOBFINISH', 'subscribe_msg_popup_event',
  'subscribe_msg_change_event', 'subscribe_msg_sent_event', 'view_miniprogram'];
const VIEWS = ['rules', 'try', 'pushes', 'menu', 'history'];
// What ui/edit.js (loaded before this file) adds: editing rules, drafts, history.
const HOOKS = {};
const LANG_KEY = 'wxrules.lang', TOKEN_KEY = 'wxrules.token', ACCOUNT_KEY = 'wxrules.account';

// ---- Small helpers --------------------------------------------------------------------------
const $ = (sel, root = document) => root.querySelector(sel);
function store(kind, key, value) {
  try {
    const s = kind === 'local' ? window.localStorage : window.sessionStorage;
    if (value === undefined) return s.getItem(key);
    if (value === null) s.removeItem(key); else s.setItem(key, value);
  } catch (_) { /* storage disabled: keep going without it */ }
  return null;
}
const S = {
  lang: store('local', LANG_KEY) === 'en' ? 'en' : 'zh',
  view: 'rules', overview: null, overviewErr: null, account: store('local', ACCOUNT_KEY),
  rules: null, rulesErr: null, rulesLoadedAt: null, pushes: null, pushesErr: null, pushesAt: null,
  tryRes: null, reloadRes: null, lrOpen: false,
  // `/api/rules`' `converses` and `states` (each state's name and users) for the account.
  convo: null,
};
function t(key, ...args) {
  const v = I18N[S.lang][key] ?? I18N.zh[key];
  if (v === undefined) return key;
  return typeof v === 'function' ? v(...args) : v;
}
function has(key) { return Object.prototype.hasOwnProperty.call(I18N[S.lang], key); }
function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of kids.flat(Infinity)) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}
function clear(node, ...kids) { node.replaceChildren(); for (const k of kids.flat(Infinity)) if (k) node.append(k); }
const pad = n => String(n).padStart(2, '0');
function parseTime(iso) {
  if (typeof iso !== 'string' || !iso) return null;
  const d = new Date(iso);
  return isNaN(d.getTime()) ? null : d;
}
function hms(d) { return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; }
function fmtTime(iso, timeOnly) {
  const d = parseTime(iso);
  if (!d) return iso ? String(iso) : t('none');
  if (timeOnly) return hms(d);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms(d)}`;
}
function timeEl(iso, timeOnly) {
  return el('time', { datetime: iso || null, title: iso || null, text: fmtTime(iso, timeOnly) });
}
const str = v => (v == null ? '' : String(v));
function badge(text, cls, title) { return el('span', { class: 'badge ' + cls, title, text }); }
const OUTCOME_CLASS = {
  applied: 'ok', replied: 'ok', added: 'ok', unchanged: 'grey', removed: 'grey',
  rejected: 'bad', error: 'bad', refused: 'bad', failed: 'bad',
  timed_out: 'warn', deadline: 'warn', partial: 'warn', retry: 'info', ignored: 'grey', no_match: 'grey',
};
function outcomeBadge(prefix, outcome) {
  const o = str(outcome);
  return badge(has(prefix + o) ? t(prefix + o) : o, OUTCOME_CLASS[o] || 'grey', o);
}
function kindLabel(kind) { const k = str(kind); return has('k_' + k) ? t('k_' + k) : k; }
function msgKindLabel(kind) {
  const k = str(kind);
  const [head, ...rest] = k.split('/');
  const base = has('m_' + head) ? t('m_' + head) : head;
  return rest.length ? `${base} · ${rest.join('/')}` : base;
}
function hostOf(url) {
  try { return new URL(url).host || str(url); } catch (_) { return str(url).slice(0, 40); }
}
function json(v) { try { return JSON.stringify(v, null, 2); } catch (_) { return String(v); } }

// ---- HTTP -----------------------------------------------------------------------------------
let tokenWait = null;
function waitForToken(serverMsg) {
  const form = $('#token-form');
  const hadToken = !!store('session', TOKEN_KEY);
  $('.token-msg', form).textContent = hadToken ? t('tokenBad') : str(serverMsg);
  form.hidden = false;
  if (!tokenWait) {
    let resolve;
    const p = new Promise(r => { resolve = r; });
    tokenWait = { p, resolve };
    form.elements.token.value = '';
    form.elements.token.focus();
  }
  return tokenWait.p;
}
function onTokenSubmit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const tok = form.elements.token.value.trim();
  if (!tok) return;
  store('session', TOKEN_KEY, tok);
  form.hidden = true;
  const w = tokenWait;
  tokenWait = null;
  if (w) w.resolve();
}
// Resolves to {status, ok, data, text}; rejects (with a readable message) only when the
// server cannot be reached. A 401 shows the token form and retries once a token is given.
async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: 'application/json' };
    const tok = store('session', TOKEN_KEY);
    if (tok) headers.Authorization = 'Bearer ' + tok;
    const init = { method, headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    let res, text = '', data = null;
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (e) {
      throw new Error(t('errNetwork') + (e && e.message ? t('paren', e.message) : ''));
    }
    if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
    if (res.status === 401) { await waitForToken(data && data.error); continue; }
    return { status: res.status, ok: res.ok, data, text };
  }
}
function httpError(r) {
  if (r.data && typeof r.data.error === 'string') return `HTTP ${r.status}: ${r.data.error}`;
  return t('errHttp', r.status) + (r.text ? ': ' + r.text.slice(0, 300) : '');
}
async function getJson(path) {
  const r = await api('GET', path);
  if (!r.ok || !r.data || typeof r.data !== 'object') throw new Error(httpError(r));
  return r.data;
}
const acctQuery = () => 'account=' + encodeURIComponent(S.account || 'default');
function showStatus(node, msg) { node.hidden = !msg; node.textContent = msg || ''; }

// ---- Overview, account selector, last reload ------------------------------------------------
function accounts() { return (S.overview && Array.isArray(S.overview.accounts)) ? S.overview.accounts : []; }
function currentAccount() { return accounts().find(a => a && a.name === S.account) || null; }
let overviewTimer = null;
async function loadOverview() {
  clearTimeout(overviewTimer);
  try {
    const before = currentAccount();
    S.overview = await getJson('/api/overview');
    S.overviewErr = null;
    const list = accounts();
    if (!list.some(a => a && a.name === S.account)) S.account = list.length ? str(list[0].name) : 'default';
    const after = currentAccount();
    renderTop();
    // Rules changed under us (SIGHUP, file watch): refresh the table.
    if (before && after && (before.loaded_at !== after.loaded_at || before.digest !== after.digest)) void loadRules();
  } catch (e) {
    S.overviewErr = e.message;
    renderTop();
  }
  overviewTimer = setTimeout(loadOverview, 10000);
}
function renderTop() {
  const ov = S.overview;
  $('#version').textContent = ov && ov.version ? t('version', ov.version) : '';
  const errBox = $('#error');
  errBox.hidden = !S.overviewErr;
  errBox.textContent = S.overviewErr || '';
  const list = accounts();
  const sel = $('#account');
  const names = list.map(a => str(a && a.name) + ' ' + str(a && a.status));
  if (sel.dataset.names !== names.join('\n')) {
    clear(sel, list.map(a => el('option', {
      value: str(a.name),
      // A broken account is marked in the list itself, whichever account is selected.
      text: (a.status && a.status !== 'ok' ? '⚠ ' : '') + (a.path ? str(a.name) + t('paren', a.path) : str(a.name)),
    })));
    sel.dataset.names = names.join('\n');
  }
  sel.value = S.account || '';
  $('#account-wrap').hidden = list.length <= 1;
  document.body.classList.toggle('multi', list.length > 1);
  const acct = currentAccount();
  const st = $('#account-status');
  st.hidden = !acct || !acct.status || acct.status === 'ok';
  st.textContent = acct ? t('statusBad', str(acct.status)) : '';
  renderLastReload(acct);
  renderRulesMeta(acct);
  if (HOOKS.top) HOOKS.top();
}
function renderLastReload(acct) {
  const box = $('#last-reload'), pop = $('#last-reload-errors');
  const lr = acct && acct.last_reload;
  const kids = [el('span', { class: 'lr-label', text: t('lrLabel') })];
  let errors = [];
  if (!acct) {
    kids.push(el('span', { class: 'muted', text: t('none') }));
  } else if (!lr) {
    kids.push(badge(t('lrNone'), 'grey'), el('span', { class: 'muted', text: t('lrLoadedAt', fmtTime(acct.loaded_at, true)) }));
  } else {
    errors = Array.isArray(lr.errors) ? lr.errors.map(str) : [];
    const n = Number(lr.error_count ?? errors.length) || 0;
    kids.push(outcomeBadge('ro_', lr.outcome), timeEl(lr.at, true),
      el('span', { class: n ? 'lr-errors bad-text' : 'muted', text: t(n ? 'lrErrors' : 'lrNoErrors', n) + (n ? ' ▾' : '') }));
  }
  clear(box, kids);
  box.classList.toggle('clickable', errors.length > 0);
  box.title = errors.length ? t('lrShow') : '';
  if (!errors.length) S.lrOpen = false;
  $('pre', pop).textContent = errors.join('\n');
  pop.hidden = !S.lrOpen;
  box.setAttribute('aria-expanded', String(S.lrOpen));
}
function toggleLastReload() {
  if (!$('#last-reload').classList.contains('clickable')) return;
  S.lrOpen = !S.lrOpen;
  $('#last-reload-errors').hidden = !S.lrOpen;
  $('#last-reload').setAttribute('aria-expanded', String(S.lrOpen));
}
function onAccountChange(ev) {
  S.account = ev.currentTarget.value;
  store('local', ACCOUNT_KEY, S.account);
  S.rules = null; S.convo = null; S.pushes = null; S.tryRes = null; S.lrOpen = false;
  renderTop(); renderRules(); renderPushes(); renderTry(); renderStates();
  void loadRules();
  if (S.view === 'pushes') void pollPushes();
  if (HOOKS.account) HOOKS.account();
}

// ---- Rules ----------------------------------------------------------------------------------
function renderRulesMeta(acct) {
  const meta = $('#rules-meta');
  if (!acct) { meta.textContent = ''; return; }
  const parts = [];
  if (acct.path) parts.push(`${t('metaPath')} ${acct.path}`);
  if (acct.templates != null) parts.push(`${t('metaTemplates')} ${acct.templates}`);
  if (acct.digest) parts.push(`${t('metaDigest')} ${acct.digest}`);
  if (acct.loaded_at) parts.push(`${t('metaLoaded')} ${fmtTime(acct.loaded_at)}`);
  if (acct.reloads_applied != null) parts.push(t('metaReloads', acct.reloads_applied, acct.reloads_rejected ?? 0));
  meta.textContent = parts.join(' · ');
}
let rulesSeq = 0;
async function loadRules() {
  const seq = ++rulesSeq;
  if (!S.rules) showStatus($('#rules-status'), t('loading'));
  try {
    const d = await getJson('/api/rules?' + acctQuery());
    if (seq !== rulesSeq) return;
    S.rules = Array.isArray(d.rules) ? d.rules : [];
    S.convo = { converses: d.converses === true, states: Array.isArray(d.states) ? d.states : [] };
    S.rulesErr = null;
  } catch (e) {
    if (seq !== rulesSeq) return;
    S.rulesErr = e.message;
  }
  renderRules();
  renderStates();
}
// The conversation states the rules set: how many users are in each now (the server counts,
// it names no user), and the try form's choice of a state to start from. Both only when
// the account's rules converse.
function renderStates() {
  const box = $('#states');
  const convo = S.convo;
  const states = convo && convo.converses ? convo.states : [];
  box.hidden = !(convo && convo.converses);
  $('#try-state-row').hidden = box.hidden;
  clear($('#states-list'), states.length
    ? states.map(s => el('li', { 'data-state': str(s.name) },
      el('code', { class: 'state-name', text: str(s.name) }), ' ',
      el('strong', { class: 'users', text: str(Number(s.users) || 0) }), ' ',
      el('span', { class: 'muted', text: t('statesUsers', Number(s.users) || 0) })))
    : el('li', { class: 'muted', text: t('statesNone') }));
  const sel = $('#try').elements.state;
  const v = sel.value;
  clear(sel, el('option', { value: '', text: t('tryNoState') }),
    states.map(s => el('option', { value: str(s.name), text: str(s.name) })));
  sel.value = states.some(s => str(s.name) === v) ? v : '';
}
function renderRules() {
  showStatus($('#rules-status'), S.rulesErr);
  const tbody = $('#rules tbody');
  const rows = (S.rules || []).map((r, i) => {
    const kind = str(r.reply);
    const tr = el('tr', { 'data-rule': str(r.name) },
      el('td', { class: 'num muted', text: i + 1 }),
      el('td', { class: 'rule-name', text: str(r.name) }),
      el('td', { class: 'when', text: str(S.lang === 'zh' && r.when_zh ? r.when_zh : r.when) }),
      el('td', null, el('span', { class: 'kind kind-' + kind.replace(/[^a-z_]/gi, ''), title: kind, text: kindLabel(kind) })),
      el('td', { class: 'mono loc', text: str(r.location) }),
      el('td', { class: 'num' + (r.hits ? '' : ' muted'), text: str(r.hits ?? 0) }),
      el('td', { class: 'nowrap' + (r.last_hit ? '' : ' muted') }, timeEl(r.last_hit)));
    if (HOOKS.ruleRow) HOOKS.ruleRow(tr, r, i, S.rules);
    tr.wxSearch = [r.name, r.when, r.when_zh, kind, I18N.zh['k_' + kind], I18N.en['k_' + kind], r.location]
      .map(str).join('\n').toLowerCase();
    return tr;
  });
  clear(tbody, rows);
  applyFilter();
}
// ---- Menu ------------------------------------------------------------------------------------
// The menu file as a phone shows it: the bar at the bottom, each sub-menu open above its
// button; each button says the rule a tap reaches and its hits.
let menuSeq = 0;
async function loadMenu() {
  const seq = ++menuSeq;
  try {
    const d = await getJson('/api/menu?' + acctQuery());
    if (seq !== menuSeq) return;
    S.menu = d; S.menuErr = null;
  } catch (e) {
    if (seq !== menuSeq) return;
    S.menuErr = e.message;
  }
  renderMenu();
}
function menuButton(b, cls) {
  const what = b.rule
    ? el('span', { class: 'menu-rule', 'data-menu-rule': str(b.rule) }, str(b.rule) + ' · ' + t('menuHits', b.hits ?? 0))
    : b.url ? el('span', { class: 'menu-rule muted', text: t('menuOpens') + ' ' + hostOf(b.url) })
    : b.needs_rule ? el('span', { class: 'menu-rule bad-text', text: t('menuNoRule') })
    : el('span', { class: 'menu-rule muted', text: str(b.type) });
  return el('div', { class: cls, 'data-menu-button': str(b.name), title: str(b.key || b.url || b.type) },
    el('span', { class: 'menu-name', text: str(b.name) }), what);
}
function renderMenu() {
  const root = $('#menu-phones');
  if (!root) return;
  $('#menu-file').textContent = S.menu && S.menu.file ? S.menu.file : '';
  showStatus($('#menu-status'), S.menuErr || (S.menu && Array.isArray(S.menu.errors) ? S.menu.errors.join('\n') : ''));
  const menus = S.menu && Array.isArray(S.menu.menu) ? S.menu.menu : null;
  if (!menus) { clear(root, S.menu && !S.menuErr && !S.menu.errors ? el('p', { class: 'muted', text: t('menuNone') }) : null); return; }
  clear(root, menus.map((m, i) => {
    const buttons = Array.isArray(m.button) ? m.button : [];
    const subs = buttons.map(b => el('div', { class: 'menu-subs' },
      (Array.isArray(b.sub_button) ? b.sub_button : []).map(s => menuButton(s, 'menu-sub'))));
    const bar = buttons.map(b => menuButton(b, 'menu-top' + (Array.isArray(b.sub_button) && b.sub_button.length ? ' has-subs' : '')));
    return el('figure', { class: 'menu-phone', 'data-menu': i },
      el('div', { class: 'phone' },
        el('div', { class: 'phone-bar' }, el('span', { class: 'phone-back', text: '‹' }), el('span', { text: str(S.account || '') }), el('span')),
        el('div', { class: 'chat menu-chat' }, el('div', { class: 'menu-row' }, subs)),
        el('div', { class: 'menu-bar' }, el('span', { class: 'menu-kbd', text: '⌨' }), bar)),
      el('figcaption', { class: 'phone-caption', text: m.matchrule ? t('menuMatch', m.matchrule) : t('menuDefault') }));
  }));
}
function applyFilter() {
  const q = $('#rules-filter').value.trim().toLowerCase();
  const tbody = $('#rules tbody');
  let shown = 0, total = 0;
  for (const tr of tbody.rows) {
    if (!tr.wxSearch) continue;
    total++;
    const ok = !q || tr.wxSearch.includes(q);
    tr.hidden = !ok;
    if (ok) shown++;
  }
  const old = $('tr.empty', tbody);
  if (old) old.remove();
  if (S.rules && shown === 0) {
    tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: 8, text: total ? t('rulesNone') : t('rulesEmpty') })));
  }
  $('#rules-count').textContent = !S.rules ? '' : (q ? t('rulesCountF', shown, total) : t('rulesCount', total));
}

// ---- Try a message --------------------------------------------------------------------------
function fillEventSelect() {
  const sel = $('#try').elements.event;
  const v = sel.value;
  clear(sel, el('option', { value: '', text: t('tryNoEvent') }),
    EVENTS.map(e => el('option', { value: e, text: `${e} · ${t('ev_' + e)}` })));
  sel.value = v;
}
async function onTrySubmit(ev) {
  ev.preventDefault();
  const f = ev.currentTarget.elements;
  const xml = f.xml.value.trim(), event = f.event.value, key = f.event_key.value.trim(), text = f.text.value;
  let body;
  if (xml) body = { xml: f.xml.value };
  else if (event) body = key ? { event, event_key: key } : { event };
  else if (text.trim()) body = { text };
  else { S.tryRes = { local: t('tryEmpty') }; renderTry(); return; }
  const state = tryState(f);
  if (typeof state === 'string') { S.tryRes = { local: state }; renderTry(); return; }
  if (state) body.state = state;
  const btn = $('#try-submit');
  btn.disabled = true;
  btn.textContent = t('trySending');
  S.tryRes = { pending: true };
  renderTry();
  // An answer that comes after the account was changed belongs to the other account.
  const acct = S.account;
  let res;
  try {
    const r = await api('POST', '/api/try?' + acctQuery() + (HOOKS.tryQuery ? HOOKS.tryQuery() : ''), body);
    if (r.ok && r.data && typeof r.data === 'object') res = { sent: body, data: r.data };
    else res = { error: httpError(r) };
  } catch (e) {
    res = { error: e.message };
  } finally {
    btn.disabled = false;
    btn.textContent = t('trySubmit');
  }
  if (acct !== S.account) return;
  S.tryRes = res;
  renderTry();
}
// The state to start from (`{name, vars}`), none, or why the vars cannot be read.
function tryState(f) {
  const row = $('#try-state-row');
  if (row.hidden) return null;
  const name = f.state.value;
  const lines = f.vars.value.split('\n').map(l => l.trim()).filter(Boolean);
  if (!name) return lines.length ? t('tryVarsNoState') : null;
  const vars = {};
  for (const line of lines) {
    const at = line.indexOf('=');
    if (at <= 0) return t('tryVarsBad', line);
    vars[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return { name, vars };
}
function renderTry() {
  const box = $('#try-result');
  const res = S.tryRes;
  box.classList.remove('has-result');
  if (!res) return clear(box, el('p', { class: 'card muted try-intro', text: t('tryIntro') }));
  if (res.pending) return clear(box, el('p', { class: 'card muted', text: t('loading') }));
  if (res.local) return clear(box, el('p', { class: 'card try-error', text: res.local }));
  if (res.error) return clear(box, el('div', { class: 'card try-error' }, el('strong', { text: t('tryErrorTitle') + t('colon') }), res.error));
  const d = res.data;
  box.classList.add('has-result');
  clear(box, el('div', { class: 'try-grid' }, renderPhone(res.sent, d), renderTryDetails(d)));
}
function renderTryDetails(d) {
  const card = el('div', { class: 'card try-details' });
  const rule = d.rule;
  if (rule) {
    const loc = rule.file ? `${rule.file}${rule.line != null ? ':' + rule.line : ''}` : '';
    card.append(el('div', { class: 'try-head' },
      el('span', { class: 'muted', text: t('tryMatched') }),
      el('span', { class: 'try-rule', text: str(rule.name) }),
      loc ? el('span', { class: 'mono muted try-loc', text: loc }) : null,
      outcomeBadge('po_', d.outcome)));
    const crit = Array.isArray(rule.criteria) ? rule.criteria : [];
    if (crit.length) {
      // The criterion in the page's language, then what the message holds.
      card.append(el('h4', { text: t('tryCriteria') }), el('ul', { class: 'criteria' }, crit.map(c =>
        el('li', { class: c.held ? 'held' : 'not-held' },
          el('span', { class: 'mark', text: c.held ? '✓' : '✗' }),
          c.when && c.when[S.lang] ? str(c.when[S.lang]) : str(c.criterion),
          c.when && c.when[S.lang] ? el('span', { class: 'mono muted criterion-value', text: `${t('tryMessageHas')}${t('colon')}${str(c.criterion)}` }) : null))));
    }
    const caps = rule.captures && typeof rule.captures === 'object' ? Object.entries(rule.captures) : [];
    if (caps.length) {
      card.append(el('h4', { text: t('tryCaptures') }), el('table', { class: 'captures' },
        el('tbody', null, caps.map(([k, v]) => el('tr', null,
          el('th', { class: 'mono', text: k }), el('td', { class: 'mono', text: typeof v === 'string' ? v : json(v) }))))));
    }
  } else {
    card.append(el('div', { class: 'try-head' },
      el('span', { class: 'try-nomatch', text: t('tryNoMatch') }), outcomeBadge('po_', d.outcome)));
  }
  if (d.error) card.append(el('p', { class: 'try-error', text: str(d.error) }));
  if (d.call) {
    const rq = d.call.request || {};
    card.append(el('h4', { text: t('tryCall') }),
      el('p', { class: 'mono call-line' }, el('strong', { text: str(rq.method) + ' ' }), str(rq.url),
        rq.timeout_ms != null ? el('span', { class: 'muted', text: ' · ' + t('tryTimeout', rq.timeout_ms) }) : null,
        d.call.stubbed ? el('span', { class: 'muted', text: ' ' + t('tryStubbed') }) : null),
      el('p', { class: 'muted', text: t('tryCallNote') }));
    if (rq.body != null) card.append(el('pre', { class: 'json', text: json(rq.body) }));
    if (d.call.holding_body != null) {
      card.append(el('p', { class: 'muted', text: t('tryHolding') }),
        el('pre', { class: 'json', text: typeof d.call.holding_body === 'string' ? d.call.holding_body : json(d.call.holding_body) }));
    }
  }
  if (d.state && typeof d.state === 'object') {
    card.append(el('h4', { text: t('tryStateTitle') }), el('p', { class: 'try-state' },
      el('span', { class: 'muted', text: t('tryStateBefore') + ' ' }), stateShown(d.state.before, 'state-before'),
      el('span', { class: 'muted', text: ' → ' + t('tryStateAfter') + ' ' }), stateShown(d.state.after, 'state-after')));
  }
  if (Array.isArray(d.sends) && d.sends.length) {
    card.append(el('h4', { text: t('trySends') }), el('ol', { class: 'sends' }, d.sends.map(s =>
      el('li', null, el('pre', { class: 'json' + (s && s.error ? ' bad-text' : ''), text: json(s) })))));
  }
  card.append(el('details', { class: 'raw', open: true },
    el('summary', { text: t('tryRaw') }), el('pre', { class: 'raw-xml', text: str(d.body) })));
  return card;
}
// A user's state as the try shows it: its name and vars, or none.
function stateShown(s, cls) {
  if (!s || typeof s !== 'object') return el('span', { class: cls + ' muted', text: t('tryStateNone') });
  const vars = s.vars && typeof s.vars === 'object' ? Object.entries(s.vars) : [];
  return el('span', { class: cls },
    el('code', { class: 'state-name', text: str(s.name) }),
    vars.map(([k, v]) => [' ', el('span', { class: 'mono state-var', text: `${k} = ${str(v)}` })]));
}
function userMessage(sent) {
  if (!sent) return null;
  if (sent.xml) {
    // Show what the pasted push says (DOMParser on XML runs nothing).
    let content = '', event = '', key = '';
    try {
      const doc = new DOMParser().parseFromString(sent.xml, 'application/xml');
      const get = n => { const x = doc.getElementsByTagName(n)[0]; return x ? x.textContent.trim() : ''; };
      content = get('Content') || get('Recognition'); event = get('Event'); key = get('EventKey');
    } catch (_) { /* shown as a plain note */ }
    if (content) return userBubble(content);
    return el('div', { class: 'chat-note', text: event ? t('tryUserEvent', event, key) : t('tryUserXml') });
  }
  if (sent.event) return el('div', { class: 'chat-note', text: t('tryUserEvent', sent.event, sent.event_key) });
  return userBubble(sent.text);
}
function userBubble(text) {
  return el('div', { class: 'msg msg-user' }, el('div', { class: 'user-bubble', text: str(text) }), el('div', { class: 'avatar avatar-user' }));
}
function renderPhone(sent, d) {
  const name = S.account || 'default';
  const now = new Date();
  const chat = el('div', { class: 'chat' }, el('div', { class: 'chat-time', text: `${pad(now.getHours())}:${pad(now.getMinutes())}` }), userMessage(sent));
  const accountMsg = node => el('div', { class: 'msg msg-account' },
    el('div', { class: 'avatar avatar-account', text: name.slice(0, 1).toUpperCase() }), node);
  const rp = d.reply;
  if (d.outcome === 'error') {
    chat.append(el('div', { class: 'chat-note try-error', text: str(d.error || t('po_error')) }));
  } else if (rp && typeof rp === 'object') {
    const node = renderReply(rp);
    chat.append(node.classList.contains('chat-note') ? node : accountMsg(node));
  } else {
    chat.append(el('div', { class: 'chat-note', text: t('tryIgnored') }));
  }
  // Customer-service messages sent afterwards: show the text ones as later bubbles.
  const texts = (Array.isArray(d.sends) ? d.sends : [])
    .filter(s => s && s.msgtype === 'text' && s.text && typeof s.text.content === 'string');
  if (texts.length) {
    chat.append(el('div', { class: 'chat-sent', text: t('trySends') }),
      ...texts.map(s => accountMsg(el('div', { class: 'bubble bubble-text bubble-sent', text: s.text.content }))));
  }
  return el('div', { class: 'phone' },
    el('div', { class: 'phone-bar' }, el('span', { class: 'phone-back', text: '‹' }), el('span', { text: name }), el('span', { text: '···' })),
    chat,
    el('div', { class: 'phone-input' }, el('span', { class: 'phone-field' })),
    el('div', { class: 'phone-caption muted', text: t('tryPreview') }));
}
function picBox(url, cls) {
  return el('div', { class: 'pic ' + (cls || ''), title: url || null, text: url ? hostOf(url) : t('noPic') });
}
function mediaBox(kind, rows) {
  return el('div', { class: 'bubble media media-' + kind },
    el('div', { class: 'media-label', text: t('k_' + kind) }),
    rows.filter(r => r[1] != null && r[1] !== '').map(([k, v]) => el('div', { class: 'media-row' },
      el('span', { class: 'muted', text: k + ' ' }), el('span', { class: 'mono', text: str(v) }))));
}
function renderReply(rp) {
  switch (rp.kind) {
    case 'text':
      return el('div', { class: 'bubble bubble-text', text: str(rp.content) });
    case 'news': {
      const arts = Array.isArray(rp.articles) ? rp.articles : [];
      const card = el('div', { class: 'news-card' + (arts.length > 1 ? ' news-multi' : ' news-single') });
      arts.forEach((a, i) => {
        const url = a.url ? el('div', { class: 'news-url mono', title: str(a.url), text: str(a.url) }) : null;
        if (arts.length === 1) {
          card.append(el('div', { class: 'news-title', text: str(a.title) }), picBox(a.pic_url, 'pic-big'),
            a.description ? el('div', { class: 'news-desc', text: str(a.description) }) : null, url,
            el('div', { class: 'news-more' }, el('span', { text: t('readMore') }), el('span', { text: '›' })));
        } else if (i === 0) {
          card.append(el('div', { class: 'news-first' }, picBox(a.pic_url, 'pic-big'),
            el('div', { class: 'news-overlay', text: str(a.title) })), url);
        } else {
          card.append(el('div', { class: 'news-row' },
            el('div', { class: 'news-row-text' }, el('div', { class: 'news-row-title', text: str(a.title) }), url),
            picBox(a.pic_url, 'pic-small')));
        }
      });
      return card;
    }
    case 'image': return mediaBox('image', [[t('mediaId'), rp.media_id]]);
    case 'voice': return mediaBox('voice', [[t('mediaId'), rp.media_id]]);
    case 'video': {
      const box = mediaBox('video', [[t('mediaId'), rp.media_id]]);
      if (rp.title) box.append(el('div', { class: 'media-title', text: str(rp.title) }));
      if (rp.description) box.append(el('div', { class: 'muted', text: str(rp.description) }));
      return box;
    }
    case 'music': {
      const box = el('div', { class: 'bubble media media-music' },
        el('div', { class: 'music-head' }, el('div', { class: 'music-icon', text: '♪' }),
          el('div', null, el('div', { class: 'media-title', text: str(rp.title) }),
            el('div', { class: 'muted', text: str(rp.description) }))));
      for (const [k, v] of [[t('k_music'), rp.music_url], [t('hq'), rp.hq_music_url], [t('thumb'), rp.thumb_media_id]]) {
        if (v) box.append(el('div', { class: 'media-row' }, el('span', { class: 'muted', text: k + ' ' }), el('span', { class: 'mono', text: str(v) })));
      }
      return box;
    }
    case 'transfer_customer_service':
      return el('div', { class: 'chat-note', text: rp.kf_account ? t('tryTransferTo', rp.kf_account) : t('tryTransfer') });
    default:
      return el('div', { class: 'bubble' }, el('div', { class: 'media-label', text: str(rp.kind) }), el('pre', { class: 'json', text: json(rp) }));
  }
}

// ---- Recent pushes --------------------------------------------------------------------------
let pushTimer = null, pushBusy = false, pushAgain = false;
function schedulePushes() {
  clearTimeout(pushTimer);
  pushTimer = null;
  if (S.view === 'pushes' && document.visibilityState === 'visible') pushTimer = setTimeout(pollPushes, 3000);
}
async function pollPushes() {
  // A poll asked for while one runs (an account change) runs right after it.
  if (pushBusy) { pushAgain = true; return; }
  pushBusy = true;
  clearTimeout(pushTimer);
  try { await loadPushes(); } finally {
    pushBusy = false;
    if (pushAgain) { pushAgain = false; void pollPushes(); } else schedulePushes();
  }
}
async function loadPushes() {
  const acct = S.account;
  try {
    const d = await getJson('/api/pushes?' + acctQuery());
    if (acct !== S.account) return;
    S.pushes = d; S.pushesErr = null; S.pushesAt = new Date();
  } catch (e) {
    S.pushesErr = e.message;
  }
  renderPushes();
}
function renderPushes() {
  showStatus($('#pushes-status'), S.pushesErr);
  const d = S.pushes;
  $('#pushes-info').textContent = t('pushesInfo', (d && d.capacity) || 200);
  $('#pushes-updated').textContent = S.pushesAt ? t('pushesUpdated', hms(S.pushesAt)) : '';
  const tbody = $('#pushes tbody');
  if (!d) return clear(tbody);
  // Newest first, whichever order the server keeps (ties within a second keep their order).
  const list = Array.isArray(d.pushes) ? d.pushes.slice() : [];
  if (list.length > 1 && (parseTime(list[0].at) || 0) < (parseTime(list[list.length - 1].at) || 0)) list.reverse();
  if (!list.length) return clear(tbody, el('tr', { class: 'empty' }, el('td', { colspan: 8, text: t('pushesEmpty') })));
  clear(tbody, list.map(p => el('tr', { class: 'push' },
    el('td', { class: 'nowrap' }, timeEl(p.at, true)),
    el('td', { class: 'col-account', text: str(p.account) }),
    el('td', { title: str(p.kind), text: msgKindLabel(p.kind) }),
    el('td', { class: 'keyword', text: str(p.keyword) }),
    el('td', { class: 'mono', text: str(p.user) }),
    el('td', { class: p.rule ? 'rule-name' : 'muted', text: p.rule ? str(p.rule) : t('none') }),
    el('td', { class: 'push-outcome' }, outcomeBadge('po_', p.outcome), afterBadges(p.after)),
    el('td', { class: 'num mono', text: p.us == null ? t('none') : Number(p.us).toLocaleString('en-US') }))));
}
// What followed a push: a failed call, the late reply's course, its customer-service messages
// (a holding reply is "replied" even when the answer it promised then failed to go out).
function afterBadges(a) {
  if (!a || typeof a !== 'object') return [];
  const out = [];
  const n = v => Number(v) || 0;
  if (a.call_failed) out.push(badge(t('af_call', str(a.call_failed)), 'bad'));
  const late = { waiting: 'info', queued: 'grey', nothing: 'warn', failed: 'bad' }[str(a.late)];
  if (late) out.push(badge(t('af_late_' + a.late), late));
  if (n(a.failed)) out.push(badge(t('af_failed', n(a.failed), a.errcode), 'bad'));
  if (n(a.refused)) out.push(badge(t('af_refused', n(a.refused)), 'bad'));
  if (n(a.kept)) out.push(badge(t('af_kept', n(a.kept)), 'warn'));
  if (n(a.queued)) out.push(badge(t('af_queued', n(a.queued)), 'info'));
  if (n(a.sent)) out.push(badge(t('af_sent', n(a.sent)), 'ok'));
  return out.map(b => { b.classList.add('after'); return b; });
}

// ---- Reload ---------------------------------------------------------------------------------
async function onReload() {
  const btn = $('#reload');
  btn.disabled = true;
  btn.textContent = t('reloading');
  try {
    const r = await api('POST', '/-/reload');
    S.reloadRes = { status: r.status, data: r.data, text: r.text };
  } catch (e) {
    S.reloadRes = { error: e.message };
  } finally {
    btn.disabled = false;
    btn.textContent = t('reload');
  }
  renderReload();
  void loadOverview();
  void loadRules();
}
function reloadBlock(a) {
  const out = [];
  const errors = Array.isArray(a.errors) ? a.errors.map(str) : [];
  if (a.outcome === 'added') {
    out.push(el('p', { class: 'reload-line ok-text', text: t('reloadAccountAdded', a.rules ?? '?') }));
  } else if (a.outcome === 'removed') {
    out.push(el('p', { class: 'reload-line muted', text: t('reloadAccountRemoved') }));
  } else if (a.outcome === 'applied') {
    out.push(el('p', { class: 'reload-line ok-text', text: t('reloadApplied', a.rules ?? '?') + (a.digest ? t('paren', `${t('metaDigest')} ${a.digest}`) : '') }));
    const lists = [['reloadAdded', a.added], ['reloadRemoved', a.removed], ['reloadChanged', a.changed]]
      .filter(([, v]) => Array.isArray(v) && v.length);
    for (const [k, v] of lists) {
      out.push(el('p', { class: 'reload-list' }, el('span', { class: 'muted', text: t(k) + t('colon') }),
        v.map((n, i) => [i ? t('listSep') : null, el('code', { text: str(n) })])));
    }
    if (!lists.length && !a.templates_changed) out.push(el('p', { class: 'muted', text: t('reloadNoChange') }));
    if (a.templates_changed) out.push(el('p', { class: 'reload-list', text: t('reloadTemplates') }));
  } else {
    const key = a.outcome === 'rejected' ? 'reloadRejected' : a.outcome === 'timed_out' ? 'reloadTimedOut' : 'reloadFailed';
    out.push(el('p', { class: 'reload-line bad-text', text: t(key) }));
  }
  if (errors.length) out.push(el('pre', { class: 'reload-errors', text: errors.join('\n') }));
  return out;
}
function renderReload() {
  const box = $('#reload-result');
  const res = S.reloadRes;
  if (!res) { box.hidden = true; return clear(box); }
  const d = res.data;
  const head = el('div', { class: 'reload-head' }, el('strong', { text: t('reloadTitle') }));
  const body = [];
  let bad = false;
  if (res.error) {
    bad = true;
    body.push(el('p', { class: 'bad-text', text: res.error }));
  } else if (d && Array.isArray(d.accounts)) {
    head.append(outcomeBadge('ro_', d.outcome));
    bad = !['applied', 'unchanged'].includes(d.outcome);
    const configErrors = Array.isArray(d.config_errors) ? d.config_errors.map(str) : [];
    if (configErrors.length) {
      body.push(el('p', { class: 'reload-line bad-text', text: t('reloadConfigErrors') }));
      body.push(el('pre', { class: 'reload-errors', text: configErrors.join('\n') }));
    }
    if (d.unchanged) body.push(el('p', { class: 'muted', text: t('reloadUnchanged', d.unchanged) }));
    for (const a of d.accounts) {
      body.push(el('div', { class: 'reload-account' },
        el('div', { class: 'reload-account-name' }, el('strong', { text: str(a.account) }), outcomeBadge('ro_', a.outcome)),
        reloadBlock(a)));
    }
  } else if (d && d.outcome) {
    head.append(outcomeBadge('ro_', d.outcome));
    bad = d.outcome !== 'applied';
    body.push(reloadBlock(d));
  } else {
    bad = true;
    body.push(el('p', { class: 'bad-text', text: httpError(res) }));
  }
  head.append(el('span', { class: 'spacer' }), el('button', {
    type: 'button', class: 'dismiss', title: t('dismiss'), 'aria-label': t('dismiss'), text: '×',
    onclick: () => { S.reloadRes = null; renderReload(); },
  }));
  box.className = 'card reload-result ' + (bad ? 'is-bad' : 'is-ok');
  clear(box, head, body.flat());
  box.hidden = false;
}

// ---- Views, language, start -----------------------------------------------------------------
// The view names are also element ids (#rules, #try, #pushes): keep the browser from
// scrolling to them, the tab bar stays in view.
function onTabClick(ev) {
  if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  const hash = ev.currentTarget.getAttribute('href');
  if (location.hash !== hash) history.pushState(null, '', hash);
  route();
}
// Arrow keys (and Home/End) move between the tabs, as in any tab list.
function onTabKey(ev) {
  const i = VIEWS.indexOf(ev.currentTarget.id.replace(/^tab-/, ''));
  const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: VIEWS.length - 1 }[ev.key];
  if (to === undefined) return;
  ev.preventDefault();
  const next = VIEWS[(to + VIEWS.length) % VIEWS.length];
  history.pushState(null, '', '#' + next);
  route();
  $(`#tab-${next}`).focus();
}
function route() {
  window.scrollTo(0, 0);
  const h = location.hash.replace(/^#/, '');
  S.view = VIEWS.includes(h) ? h : 'rules';
  for (const v of VIEWS) {
    $(`#${v}-view`).hidden = v !== S.view;
    const tab = $(`#tab-${v}`);
    tab.classList.toggle('active', v === S.view);
    tab.tabIndex = v === S.view ? 0 : -1;
    tab.setAttribute('aria-selected', String(v === S.view));
  }
  if (S.overview || S.overviewErr) loadView();
}
function loadView() {
  if (HOOKS.view) HOOKS.view(S.view);
  // The try form lists the account's states, which come with its rules.
  if (S.view === 'rules' || S.view === 'try') void loadRules();
  if (S.view === 'menu') void loadMenu();
  if (S.view === 'pushes') void pollPushes(); else schedulePushes();
}
function applyLang() {
  document.documentElement.lang = S.lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('title');
  for (const n of document.querySelectorAll('[data-i18n]')) n.textContent = t(n.dataset.i18n);
  for (const n of document.querySelectorAll('[data-i18n-ph]')) {
    n.placeholder = t(n.dataset.i18nPh);
    // A placeholder is not a label: screen readers get the same words as its name.
    n.setAttribute('aria-label', t(n.dataset.i18nPh));
  }
  const lang = $('#lang');
  lang.textContent = t('langBtn');
  lang.title = t('langTitle');
  $('#reload').textContent = t($('#reload').disabled ? 'reloading' : 'reload');
  $('#try-submit').textContent = t($('#try-submit').disabled ? 'trySending' : 'trySubmit');
  fillEventSelect();
  renderTop(); renderRules(); renderPushes(); renderTry(); renderReload(); renderMenu(); renderStates();
  if (HOOKS.lang) HOOKS.lang();
}
function start() {
  $('#lang').addEventListener('click', () => {
    S.lang = S.lang === 'zh' ? 'en' : 'zh';
    store('local', LANG_KEY, S.lang);
    applyLang();
  });
  $('#reload').addEventListener('click', () => void onReload());
  $('#account').addEventListener('change', onAccountChange);
  $('#last-reload').addEventListener('click', toggleLastReload);
  $('#last-reload').addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggleLastReload(); } });
  $('#rules-filter').addEventListener('input', applyFilter);
  $('#rules-refresh').addEventListener('click', () => void loadRules());
  $('#pushes-refresh').addEventListener('click', () => void pollPushes());
  $('#menu-refresh').addEventListener('click', () => void loadMenu());
  $('#try').addEventListener('submit', e => void onTrySubmit(e));
  $('#token-form').addEventListener('submit', onTokenSubmit);
  for (const v of VIEWS) {
    $(`#tab-${v}`).addEventListener('click', onTabClick);
    $(`#tab-${v}`).addEventListener('keydown', onTabKey);
  }
  window.addEventListener('hashchange', route);
  window.addEventListener('popstate', route);
  document.addEventListener('visibilitychange', () => {
    if (S.view === 'pushes' && document.visibilityState === 'visible') void pollPushes(); else schedulePushes();
  });
  // The editor (ui/edit.js) gets the helpers it shares with the rest of the page.
  for (const plugin of window.wxrulesPlugins || []) {
    plugin({ S, I18N, HOOKS, $, el, clear, t, str, api, getJson, httpError, acctQuery, showStatus,
      loadRules, loadOverview, timeEl, badge, store });
  }
  applyLang();
  route();
  void loadOverview().then(loadView);
}
start();
})();
