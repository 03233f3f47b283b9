// node-oidc-provider configured like Connect IdP, the reference for bench/run.py.
//
//   PORT=5100 BENCH_CC_SECRET=... BENCH_RP_SECRET=... BENCH_PASSWORD=... [BENCH_REDIS_URL=redis://...] node server.js
//
// Equivalent to ours: a confidential client_credentials client and a confidential code + refresh client
// (client_secret_basic), JWT access tokens (RFC 9068 shape) signed ES256 for every grant (resource indicators,
// with a default resource), ID tokens RS256, refresh tokens rotated on every use, introspection and
// client_credentials enabled, and a password login page that verifies an argon2id hash made with the same
// parameters as ours (m=19456 KiB, t=2, p=1). Storage: an unbounded in-process Map (below), or Redis when
// BENCH_REDIS_URL is set (keys under BENCH_REDIS_PREFIX). Not the provider's own development adapter: that one is
// an LRU of 1,000 entries, and a benchmark evicts its sessions, grants and refresh tokens within seconds (its
// introspection then answers active:false). Two RSA-2048 and two P-256 keys, like our active + next keys. Prints
// "ready <port>" when listening.
//
// Not equivalent, by design of node-oidc-provider: JWT access tokens are not stored (ours records every one so
// it can be revoked), and its introspection endpoint refuses JWTs, so "introspection" here introspects an opaque
// client_credentials token (resource urn:bench:opaque) instead.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import argon2 from 'argon2';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 5100);
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'urn:bench:api';
const OPAQUE_RESOURCE = 'urn:bench:opaque';
const REDIRECT_URI = process.env.BENCH_REDIRECT_URI || 'http://127.0.0.1:9/callback';
const ACCOUNT = { id: 'bench-person', email: process.env.BENCH_EMAIL || 'perf@bench.example' };
const ARGON2 = {
  type: argon2.argon2id,
  memoryCost: Number(process.env.BENCH_ARGON2_MEMORY_KIB || 19456),
  timeCost: Number(process.env.BENCH_ARGON2_TIME_COST || 2),
  parallelism: Number(process.env.BENCH_ARGON2_PARALLELISM || 1),
};
const passwordHash = await argon2.hash(process.env.BENCH_PASSWORD || 'Bench-Perf-Harbour-Lantern-2024', ARGON2);

function signingKey(kind, index) {
  const { privateKey } = kind === 'RSA'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const alg = kind === 'RSA' ? 'RS256' : 'ES256';
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg.toLowerCase()}-${index}` };
}

// --- in-process adapter: a Map with expiry, no eviction ------------------------------------------------------

function mapAdapter() {
  const store = new Map(); // key -> { payload, expiresAt }
  const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
    'BackchannelAuthenticationRequest']);
  const live = (key) => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) { store.delete(key); return undefined; }
    return entry.payload;
  };
  const put = (key, payload, expiresIn) => store.set(key, {
    payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity,
  });
  setInterval(() => {
    const now = Date.now();
    for (const [key, entry] of store) if (entry.expiresAt <= now) store.delete(key);
  }, 30000).unref();

  return class MapAdapter {
    constructor(name) { this.name = name; }

    key(id) { return `${this.name}:${id}`; }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      put(key, payload, expiresIn);
      if (grantable.has(this.name) && payload.grantId) {
        const grantKey = `grant:${payload.grantId}`;
        const members = live(grantKey) || [];
        members.push(key);
        put(grantKey, members, expiresIn);
      }
      if (payload.userCode) put(`userCode:${payload.userCode}`, id, expiresIn);
      if (payload.uid) put(`uid:${payload.uid}`, id, expiresIn);
    }

    async find(id) { return live(this.key(id)); }

    async findByUid(uid) { const id = live(`uid:${uid}`); return id ? this.find(id) : undefined; }

    async findByUserCode(code) { const id = live(`userCode:${code}`); return id ? this.find(id) : undefined; }

    async consume(id) {
      const payload = live(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }

    async destroy(id) { store.delete(this.key(id)); }

    async revokeByGrantId(grantId) {
      for (const key of live(`grant:${grantId}`) || []) store.delete(key);
      store.delete(`grant:${grantId}`);
    }
  };
}

// --- Redis adapter (after node-oidc-provider's example/adapters/redis.js) -------------------------------------

async function redisAdapter(url, prefix) {
  const { Redis } = await import('ioredis');
  const client = new Redis(url, { keyPrefix: prefix });
  const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
    'BackchannelAuthenticationRequest']);
  const consumable = new Set(['AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
  const grantKey = (id) => `grant:${id}`;
  const uidKey = (uid) => `uid:${uid}`;
  const userCodeKey = (code) => `userCode:${code}`;

  return class RedisAdapter {
    constructor(name) { this.name = name; }

    key(id) { return `${this.name}:${id}`; }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const multi = client.multi();
      if (consumable.has(this.name)) multi.hset(key, { payload: JSON.stringify(payload) });
      else multi.set(key, JSON.stringify(payload));
      if (expiresIn) multi.expire(key, expiresIn);
      if (grantable.has(this.name) && payload.grantId) {
        const gKey = grantKey(payload.grantId);
        multi.rpush(gKey, key);
        const ttl = await client.ttl(gKey);
        if (expiresIn > ttl) multi.expire(gKey, expiresIn);
      }
      if (payload.userCode) multi.set(userCodeKey(payload.userCode), id, 'EX', expiresIn);
      if (payload.uid) multi.set(uidKey(payload.uid), id, 'EX', expiresIn);
      await multi.exec();
    }

    async find(id) {
      const data = consumable.has(this.name) ? await client.hgetall(this.key(id)) : await client.get(this.key(id));
      if (!data || (typeof data === 'object' && Object.keys(data).length === 0)) return undefined;
      if (typeof data === 'string') return JSON.parse(data);
      const { payload, ...rest } = data;
      return { ...rest, ...JSON.parse(payload) };
    }

    async findByUid(uid) { return this.find(await client.get(uidKey(uid))); }

    async findByUserCode(code) { return this.find(await client.get(userCodeKey(code))); }

    async consume(id) { await client.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000)); }

    async destroy(id) { await client.del(this.key(id)); }

    async revokeByGrantId(grantId) {
      // Keys in the list already carry no prefix; ioredis adds it to each command's key.
      const multi = client.multi();
      const keys = await client.lrange(grantKey(grantId), 0, -1);
      keys.forEach((k) => multi.del(k));
      multi.del(grantKey(grantId));
      await multi.exec();
    }
  };
}

// --- the provider ---------------------------------------------------------------------------------------------

const configuration = {
  clients: [
    {
      client_id: 'perf-cc', client_secret: process.env.BENCH_CC_SECRET, grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'perf-rp', client_secret: process.env.BENCH_RP_SECRET,
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [REDIRECT_URI],
      token_endpoint_auth_method: 'client_secret_basic', id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: { keys: [signingKey('RSA', 1), signingKey('EC', 1), signingKey('RSA', 2), signingKey('EC', 2)] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  async findAccount(_ctx, id) {
    if (id !== ACCOUNT.id) return undefined;
    return {
      accountId: id,
      async claims() { return { sub: id, email: ACCOUNT.email, email_verified: true }; },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'offline_access', 'email', 'api'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, indicator) {
        if (indicator === OPAQUE_RESOURCE) {
          return { scope: 'api', audience: OPAQUE_RESOURCE, accessTokenFormat: 'opaque', accessTokenTTL: 3600 };
        }
        return {
          scope: 'api', audience: indicator, accessTokenFormat: 'jwt', accessTokenTTL: 3600,
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  rotateRefreshToken: true,
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, ClientCredentials: 3600, IdToken: 3600, Interaction: 1800,
    Grant: 30 * 24 * 3600, RefreshToken: 30 * 24 * 3600, Session: 12 * 3600,
  },
};
configuration.adapter = process.env.BENCH_REDIS_URL
  ? await redisAdapter(process.env.BENCH_REDIS_URL, process.env.BENCH_REDIS_PREFIX || 'bench:node:')
  : mapAdapter();

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, error) => console.error('server_error', error));

// --- interactions: a password login page, consent given with the login (a first-party client) -----------------

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; if (body.length > 65536) req.destroy(); });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function loginPage(uid, error = '') {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in</title></head><body><h1>Sign in</h1>${error}
<form method="post" action="/interaction/${uid}/login">
<label>E-mail <input name="email" type="email" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function grantFor(details, accountId) {
  const { prompt: { details: missing }, params, grantId } = details;
  const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  else grant.addOIDCScope(params.scope);
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  grant.addResourceScope(RESOURCE, 'api');
  return grant.save();
}

async function interactions(req, res) {
  const match = /^\/interaction\/([\w-]+)(\/login)?$/.exec(req.url.split('?')[0]);
  if (!match) return false;
  try {
    const details = await provider.interactionDetails(req, res);
    if (match[2] && req.method === 'POST') {
      const form = await readForm(req);
      const ok = form.get('email') === ACCOUNT.email && await argon2.verify(passwordHash, form.get('password') || '');
      if (!ok) {
        res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' });
        res.end(loginPage(details.uid, '<p>The e-mail address or the password is not correct.</p>'));
        return true;
      }
      // Login and consent in one step, as for a first-party client.
      const grantId = await grantFor({ ...details, prompt: { details: {} } }, ACCOUNT.id);
      await provider.interactionFinished(req, res, { login: { accountId: ACCOUNT.id }, consent: { grantId } },
        { mergeWithLastSubmission: false });
      return true;
    }
    if (details.prompt.name === 'consent') {
      const grantId = await grantFor(details, details.session.accountId);
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return true;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(loginPage(details.uid));
  } catch (error) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${error.message}`);
  }
  return true;
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  if (req.url.startsWith('/interaction/') && await interactions(req, res)) return;
  callback(req, res);
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1', () => console.log(`ready ${port}`));
