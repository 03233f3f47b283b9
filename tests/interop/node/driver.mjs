// Drives a live Connect IdP with openid-client (panva; OpenID-certified RP library).
//
// Input: one JSON object on stdin (see tests/interop/test_openid_client.py):
//   { issuer, confidential: {client_id, client_secret, redirect_uri, scope},
//     private_key_jwt: {client_id, jwk}, person: {email, password} }
// Output: one JSON line per step on stdout:
//   {"step": name, "ok": true, ...observations}  or  {"step": name, "ok": false, "error": {...}}
// A step whose prerequisite failed is reported as {"ok": false, "skipped": "<prerequisite>"}.
//
// The browser part of the code flow is plain HTTP against the IdP's real pages:
// fetch with redirect: 'manual', a small cookie jar, the login and consent forms
// posted with their CSRF tokens. The redirect to the client's redirect_uri is
// only read from Location, never followed.

import * as client from 'openid-client'

const input = JSON.parse(await readStdin())
const issuer = new URL(input.issuer)
const conf = input.confidential
const pkjwt = input.private_key_jwt
const person = input.person

const state = {}
const failed = new Set()

function emit(record) {
  process.stdout.write(JSON.stringify(record) + '\n')
}

function describe(err) {
  const out = { name: err?.name, message: err?.message }
  for (const k of ['code', 'error', 'error_description', 'status']) {
    if (err?.[k] !== undefined) out[k] = err[k]
  }
  if (err?.cause && typeof err.cause === 'object') {
    out.cause = {}
    for (const k of ['error', 'error_description', 'message', 'status']) {
      if (err.cause[k] !== undefined) out.cause[k] = err.cause[k]
    }
    if (typeof err.cause.headers?.get === 'function') {
      out.cause.www_authenticate = err.cause.headers.get('www-authenticate')
    }
  }
  if (err?.response?.headers?.get) {
    out.www_authenticate = err.response.headers.get('www-authenticate')
  }
  return out
}

async function step(name, needs, fn) {
  const missing = needs.find((n) => failed.has(n))
  if (missing) {
    failed.add(name)
    emit({ step: name, ok: false, skipped: missing })
    return
  }
  try {
    const observations = (await fn()) ?? {}
    emit({ step: name, ok: true, ...observations })
  } catch (err) {
    failed.add(name)
    emit({ step: name, ok: false, error: describe(err) })
  }
}

/** Runs fn, which must fail; returns the error's description. */
async function expectFailure(what, fn) {
  try {
    await fn()
  } catch (err) {
    return describe(err)
  }
  throw new Error(`${what} succeeded but must fail`)
}

function readStdin() {
  return new Promise((resolve, reject) => {
    let data = ''
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (chunk) => (data += chunk))
    process.stdin.on('end', () => resolve(data))
    process.stdin.on('error', reject)
  })
}

// -- the "browser": fetch, a cookie jar, the IdP's forms ----------------------

class Browser {
  constructor() {
    this.cookies = new Map()
    this.pages = []
  }

  cookieHeader() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }

  store(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';')
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      const attrs = Object.fromEntries(attributes.map((a) => {
        const i = a.indexOf('=')
        return i < 0 ? [a.trim().toLowerCase(), ''] : [a.slice(0, i).trim().toLowerCase(), a.slice(i + 1).trim()]
      }))
      const expired = attrs['max-age'] !== undefined
        ? Number(attrs['max-age']) <= 0
        : attrs.expires !== undefined && Date.parse(attrs.expires) <= Date.now()
      if (expired) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
  }

  async request(url, { method = 'GET', form } = {}) {
    const headers = { accept: 'text/html', cookie: this.cookieHeader() }
    let body
    if (form) {
      headers['content-type'] = 'application/x-www-form-urlencoded'
      headers.origin = new URL(url).origin
      headers.referer = url.href
      body = new URLSearchParams(form).toString()
    }
    const response = await fetch(url, { method, headers, body, redirect: 'manual' })
    this.store(response)
    return response
  }

  /**
   * From the authorization URL to the redirect to redirectUri: follows the
   * IdP's redirects, fills in the login and consent forms. Returns that
   * redirect's URL (the authorization response).
   */
  async authorize(authorizationUrl, redirectUri, { email, password }) {
    let url = new URL(authorizationUrl)
    let response = await this.request(url)
    for (let hops = 0; hops < 25; hops++) {
      if (response.status >= 300 && response.status < 400) {
        const location = response.headers.get('location')
        if (!location) throw new Error(`${response.status} without Location at ${url.pathname}`)
        const next = new URL(location, url)
        if (next.href.split('?')[0] === redirectUri) return next
        if (next.origin !== issuer.origin) throw new Error(`redirected away from the IdP to ${next.href}`)
        url = next
        response = await this.request(url)
        continue
      }
      const html = await response.text()
      if (response.status !== 200) {
        throw new Error(`${response.status} at ${url.pathname}: ${text(html).slice(0, 300)}`)
      }
      const form = parseForm(html)
      if (!form) throw new Error(`page without a form at ${url.pathname}: ${text(html).slice(0, 300)}`)
      const target = form.action ? new URL(form.action, url) : url
      if (form.fields.has('password')) {
        this.pages.push({ page: 'login', path: url.pathname })
        response = await this.request(target, {
          method: 'POST',
          form: { csrf_token: form.csrf, email, password, action: 'login' },
        })
      } else if (form.buttons.includes('allow')) {
        this.pages.push({ page: 'consent', path: url.pathname })
        response = await this.request(target, { method: 'POST', form: { csrf_token: form.csrf, action: 'allow' } })
      } else {
        throw new Error(`unexpected page at ${url.pathname}: ${text(html).slice(0, 300)}`)
      }
      url = target
    }
    throw new Error('too many redirects or pages')
  }
}

function unescapeHtml(s) {
  return s.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (m, e) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#x27': "'" })[e])
}

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)')`, 'i'))
  return m ? unescapeHtml(m[2] ?? m[3]) : undefined
}

function parseForm(html) {
  const formMatch = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i)
  if (!formMatch) return null
  const formTag = formMatch[0].match(/<form\b[^>]*>/i)[0]
  const inner = formMatch[1]
  const fields = new Map()
  for (const tag of inner.match(/<input\b[^>]*>/gi) ?? []) {
    const name = attr(tag, 'name')
    if (name) fields.set(name, attr(tag, 'value') ?? '')
  }
  const buttons = (inner.match(/<button\b[^>]*>/gi) ?? []).map((t) => attr(t, 'value')).filter(Boolean)
  const csrf = fields.get('csrf_token')
  if (!csrf) throw new Error('form without csrf_token')
  return { action: attr(formTag, 'action'), fields, buttons, csrf }
}

function text(html) {
  return html.replace(/<script[\s\S]*?<\/script>|<style[\s\S]*?<\/style>/gi, ' ').replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ').trim()
}

// -- helpers --------------------------------------------------------------------

function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url')
}

async function jwkThumbprint(publicKey) {
  // RFC 7638, computed here (not by the library under test).
  const jwk = await crypto.subtle.exportKey('jwk', publicKey)
  const members = jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : { e: jwk.e, kty: jwk.kty, n: jwk.n }
  return b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(JSON.stringify(members))))
}

async function importPrivateKey(jwk) {
  const algorithms = {
    RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
    ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  }
  const alg = jwk.alg ?? (jwk.kty === 'EC' ? 'ES256' : 'RS256')
  const { alg: _a, kid: _k, use: _u, key_ops: _o, ...material } = jwk
  return crypto.subtle.importKey('jwk', material, algorithms[alg], false, ['sign'])
}

async function codeFlow(config, browser, { dpop, scope = conf.scope } = {}) {
  const codeVerifier = client.randomPKCECodeVerifier()
  const expectedState = client.randomState()
  const expectedNonce = client.randomNonce()
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: conf.redirect_uri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state: expectedState,
    nonce: expectedNonce,
  })
  const pagesBefore = browser.pages.length
  const callback = await browser.authorize(authorizationUrl, conf.redirect_uri, person)
  const tokens = await client.authorizationCodeGrant(
    config,
    callback,
    { pkceCodeVerifier: codeVerifier, expectedState, expectedNonce, idTokenExpected: true },
    undefined,
    dpop ? { DPoP: dpop } : undefined,
  )
  return {
    tokens,
    callback,
    pages: browser.pages.slice(pagesBefore).map((p) => p.page),
  }
}

// -- the steps ------------------------------------------------------------------

await step('discovery', [], async () => {
  state.config = await client.discovery(issuer, conf.client_id, undefined, client.ClientSecretBasic(conf.client_secret), {
    execute: [client.allowInsecureRequests],
  })
  const md = state.config.serverMetadata()
  return {
    issuer: md.issuer,
    supports_pkce: md.supportsPKCE(),
    token_endpoint_auth_methods_supported: md.token_endpoint_auth_methods_supported,
    dpop_signing_alg_values_supported: md.dpop_signing_alg_values_supported,
    authorization_response_iss_parameter_supported: md.authorization_response_iss_parameter_supported,
  }
})

state.browser = new Browser()

await step('code_flow', ['discovery'], async () => {
  const { tokens, callback, pages } = await codeFlow(state.config, state.browser)
  state.tokens = tokens
  const claims = tokens.claims()
  state.sub = claims.sub
  return {
    pages,
    callback_params: [...callback.searchParams.keys()].sort(),
    callback_iss: callback.searchParams.get('iss'),
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expiresIn(),
    has_refresh_token: typeof tokens.refresh_token === 'string',
    id_token: {
      iss: claims.iss, sub: claims.sub, aud: claims.aud, nonce_checked: true,
      has_auth_time: typeof claims.auth_time === 'number', has_sid: typeof claims.sid === 'string',
      has_at_hash: typeof claims.at_hash === 'string',
    },
  }
})

await step('userinfo', ['code_flow'], async () => {
  // expectedSubject: openid-client refuses a UserInfo response for another sub.
  const info = await client.fetchUserInfo(state.config, state.tokens.access_token, state.sub)
  return { sub: info.sub, email: info.email, email_verified: info.email_verified, claims: Object.keys(info).sort() }
})

await step('introspection', ['code_flow'], async () => {
  const access = await client.tokenIntrospection(state.config, state.tokens.access_token)
  const refresh = await client.tokenIntrospection(state.config, state.tokens.refresh_token, { token_type_hint: 'refresh_token' })
  const garbage = await client.tokenIntrospection(state.config, 'not-a-token-' + client.randomState())
  return {
    access: { active: access.active, sub: access.sub, client_id: access.client_id, token_type: access.token_type, scope: access.scope },
    refresh: { active: refresh.active, sub: refresh.sub, client_id: refresh.client_id },
    unknown_active: garbage.active,
  }
})

await step('revocation', ['code_flow'], async () => {
  await client.tokenRevocation(state.config, state.tokens.access_token, { token_type_hint: 'access_token' })
  const after = await client.tokenIntrospection(state.config, state.tokens.access_token)
  const userinfo = await expectFailure('UserInfo with a revoked access token', () =>
    client.fetchUserInfo(state.config, state.tokens.access_token, state.sub))
  // RFC 7009 §2.2: an unknown token is no error.
  await client.tokenRevocation(state.config, 'not-a-token-' + client.randomState())
  return { active_after: after.active, userinfo_after: userinfo }
})

await step('refresh', ['code_flow'], async () => {
  const old = state.tokens.refresh_token
  const tokens = await client.refreshTokenGrant(state.config, old)
  state.refreshed = tokens
  const info = await client.fetchUserInfo(state.config, tokens.access_token, state.sub)
  return {
    rotated: typeof tokens.refresh_token === 'string' && tokens.refresh_token !== old,
    new_access_token: tokens.access_token !== state.tokens.access_token,
    token_type: tokens.token_type,
    id_token_sub: tokens.id_token ? tokens.claims().sub : null,
    userinfo_sub: info.sub,
  }
})

await step('refresh_reuse', ['refresh'], async () => {
  const reuse = await expectFailure('a second refresh with the rotated-out refresh token', () =>
    client.refreshTokenGrant(state.config, state.tokens.refresh_token))
  // RFC 9700 §4.14.2: reuse may revoke the whole family; observed, not required.
  const successor = await client.tokenIntrospection(state.config, state.refreshed.refresh_token)
  return { old_refresh_error: reuse, successor_active_after_reuse: successor.active }
})

await step('client_credentials', ['discovery'], async () => {
  const tokens = await client.clientCredentialsGrant(state.config)
  const introspected = await client.tokenIntrospection(state.config, tokens.access_token)
  return {
    token_type: tokens.token_type,
    has_refresh_token: 'refresh_token' in tokens,
    active: introspected.active,
    sub: introspected.sub,
    client_id: introspected.client_id,
    aud: introspected.aud,
  }
})

await step('private_key_jwt', ['discovery'], async () => {
  const key = await importPrivateKey(pkjwt.jwk)
  const config = new client.Configuration(
    state.config.serverMetadata(),
    pkjwt.client_id,
    {},
    client.PrivateKeyJwt({ key, kid: pkjwt.jwk.kid }),
  )
  client.allowInsecureRequests(config)
  state.pkjwtConfig = config
  const tokens = await client.clientCredentialsGrant(config)
  // Each call signs a fresh assertion (new jti): introspect and revoke with it too.
  const own = await client.tokenIntrospection(config, tokens.access_token)
  const foreign = await client.tokenIntrospection(state.config, tokens.access_token)
  await client.tokenRevocation(config, tokens.access_token)
  const revoked = await client.tokenIntrospection(config, tokens.access_token)
  return {
    token_type: tokens.token_type,
    active: own.active,
    client_id: own.client_id,
    sub: own.sub,
    active_for_other_client: foreign.active,
    active_after_revocation: revoked.active,
  }
})

await step('dpop', ['code_flow'], async () => {
  const keyPair = await client.randomDPoPKeyPair('ES256')
  const jkt = await jwkThumbprint(keyPair.publicKey)
  const dpop = client.getDPoPHandle(state.config, keyPair)
  // Second authorization in the same browser: the IdP session is reused.
  const { tokens, pages } = await codeFlow(state.config, state.browser, { dpop })
  const introspected = await client.tokenIntrospection(state.config, tokens.access_token)
  const info = await client.fetchUserInfo(state.config, tokens.access_token, tokens.claims().sub, { DPoP: dpop })
  const asBearer = await expectFailure('UserInfo with a DPoP-bound token sent as Bearer', () =>
    client.fetchUserInfo(state.config, tokens.access_token, info.sub))
  const otherKey = client.getDPoPHandle(state.config, await client.randomDPoPKeyPair('ES256'))
  const wrongKey = await expectFailure('UserInfo with a proof by another key', () =>
    client.fetchUserInfo(state.config, tokens.access_token, info.sub, { DPoP: otherKey }))
  const refreshed = await client.refreshTokenGrant(state.config, tokens.refresh_token, undefined, { DPoP: dpop })
  const refreshedIntrospection = await client.tokenIntrospection(state.config, refreshed.access_token)
  const infoAfterRefresh = await client.fetchUserInfo(state.config, refreshed.access_token, info.sub, { DPoP: dpop })
  // Revoke the (rotated) refresh token: its family is gone.
  await client.tokenRevocation(state.config, refreshed.refresh_token, { token_type_hint: 'refresh_token' })
  const revoked = await client.tokenIntrospection(state.config, refreshed.refresh_token)
  const refreshAfterRevocation = await expectFailure('refresh with a revoked refresh token', () =>
    client.refreshTokenGrant(state.config, refreshed.refresh_token, undefined, { DPoP: dpop }))
  return {
    pages,
    jkt,
    token_type: tokens.token_type,
    introspection: { active: introspected.active, token_type: introspected.token_type, cnf_jkt: introspected.cnf?.jkt },
    userinfo_sub: info.sub,
    id_token_sub: tokens.claims().sub,
    bearer_use: asBearer,
    wrong_key_use: wrongKey,
    refresh_token_type: refreshed.token_type,
    refresh_cnf_jkt: refreshedIntrospection.cnf?.jkt,
    userinfo_after_refresh_sub: infoAfterRefresh.sub,
    refresh_token_active_after_revocation: revoked.active,
    refresh_after_revocation: refreshAfterRevocation,
  }
})

await step('dpop_client_credentials', ['private_key_jwt'], async () => {
  const keyPair = await client.randomDPoPKeyPair('ES256')
  const dpop = client.getDPoPHandle(state.pkjwtConfig, keyPair)
  const tokens = await client.clientCredentialsGrant(state.pkjwtConfig, undefined, { DPoP: dpop })
  const introspected = await client.tokenIntrospection(state.pkjwtConfig, tokens.access_token)
  return {
    jkt: await jwkThumbprint(keyPair.publicKey),
    token_type: tokens.token_type,
    introspection: { active: introspected.active, token_type: introspected.token_type, cnf_jkt: introspected.cnf?.jkt },
  }
})

await step('dpop_nonce', ['private_key_jwt'], async () => {
  // A second IdP (same database) that requires DPoP nonces at its token endpoint.
  // The token requests are recorded through customFetch to see the nonce dance.
  const tokenRequests = []
  const recordingFetch = async (url, options) => {
    const response = await fetch(url, options)
    if (new URL(url).pathname === '/token') {
      const entry = { status: response.status }
      if (response.status !== 200) {
        entry.error = (await response.clone().json().catch(() => ({}))).error
        entry.dpop_nonce_header = response.headers.has('dpop-nonce')
      }
      tokenRequests.push(entry)
    }
    return response
  }
  const key = await importPrivateKey(pkjwt.jwk)
  const config = await client.discovery(
    new URL(input.dpop_nonce_issuer),
    pkjwt.client_id,
    {},
    client.PrivateKeyJwt({ key, kid: pkjwt.jwk.kid }),
    { execute: [client.allowInsecureRequests], [client.customFetch]: recordingFetch },
  )
  const keyPair = await client.randomDPoPKeyPair('ES256')
  const dpop = client.getDPoPHandle(config, keyPair)
  const tokens = await client.clientCredentialsGrant(config, undefined, { DPoP: dpop })
  const introspected = await client.tokenIntrospection(config, tokens.access_token)
  return {
    jkt: await jwkThumbprint(keyPair.publicKey),
    token_requests: tokenRequests,
    token_type: tokens.token_type,
    introspection: { active: introspected.active, token_type: introspected.token_type, cnf_jkt: introspected.cnf?.jkt },
  }
})

emit({ step: 'done', ok: failed.size === 0, failed: [...failed] })
