// Chunked, resumable uploads (docs/files.md): initiate, PUT the missing chunks, complete with the
// file's SHA-256, then send the file message. An upload survives a page reload: what it needs to go
// on is kept in localStorage, and the person picks the same file again to resume it.
import { createSHA256 } from 'hash-wasm';
import { ApiError } from './api.js';

const STORE_KEY = 'chat4all.uploads';
const PARALLEL = 3;
const CHUNK_TRIES = 5;
const HASH_SLICE = 8 * 1024 * 1024;

/** The byte range of chunk ``index`` of a ``size``-byte file cut into ``chunkSize`` pieces. */
export function chunkRange(index, chunkSize, size) {
  const start = index * chunkSize;
  return [start, Math.min(size, start + chunkSize)];
}

/** Bytes already on the server, given the chunks still missing. */
export function bytesDone(size, chunkSize, missing) {
  let done = size;
  for (const index of missing) {
    const [start, end] = chunkRange(index, chunkSize, size);
    done -= end - start;
  }
  return Math.max(0, Math.min(size, done));
}

/** Is ``file`` the one a saved upload was made from? (name, size and modification time, like tus fingerprints) */
export function sameFile(saved, file) {
  return saved.name === file.name && saved.size === file.size && saved.lastModified === file.lastModified;
}

/** The saved uploads (still unfinished) of ``userId``. */
export function savedUploads(userId, storage = globalThis.localStorage) {
  return Object.values(readAll(storage)).filter((u) => u.user_id === userId);
}

export function forgetUpload(fileId, storage = globalThis.localStorage) {
  const all = readAll(storage);
  delete all[fileId];
  storage.setItem(STORE_KEY, JSON.stringify(all));
}

function readAll(storage) {
  try {
    return JSON.parse(storage.getItem(STORE_KEY) || '{}');
  } catch {
    return {};
  }
}

function remember(record, storage) {
  const all = readAll(storage);
  all[record.file_id] = record;
  storage.setItem(STORE_KEY, JSON.stringify(all));
}

/** PUT one chunk with progress, through XMLHttpRequest (fetch reports no upload progress). */
export function putChunk(url, token, blob, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      let problem = {};
      try {
        problem = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      reject(new ApiError(xhr.status, problem));
    };
    xhr.onerror = () => reject(new ApiError(0));
    xhr.onabort = () => reject(new DOMException('paused', 'AbortError'));
    signal.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(blob);
  });
}

async function sha256(file, signal) {
  const hasher = await createSHA256();
  hasher.init();
  for (let start = 0; start < file.size; start += HASH_SLICE) {
    if (signal.aborted) throw new DOMException('paused', 'AbortError');
    hasher.update(new Uint8Array(await file.slice(start, start + HASH_SLICE).arrayBuffer()));
  }
  return `sha256:${hasher.digest('hex')}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One upload. ``state`` is {phase, sent, size, error}; phase is one of
 * 'starting', 'uploading', 'paused', 'completing', 'sending', 'done', 'failed'.
 * ``onChange(upload)`` is called on every change; ``onDone(upload)`` sends the file message.
 */
export class Upload {
  constructor({ api, file, conversationId, userId, saved = null, onChange, onDone, storage = globalThis.localStorage, put = putChunk }) {
    this.api = api;
    this.file = file;
    this.conversationId = conversationId;
    this.userId = userId;
    this.record = saved;
    this.onChange = onChange;
    this.onDone = onDone;
    this.storage = storage;
    this.put = put;
    this.key = saved?.file_id ?? `${file.name}:${file.size}:${file.lastModified}:${Math.random()}`;
    this.state = { phase: 'starting', sent: 0, size: file.size, error: null };
    this.controller = null;
    this.inflight = new Map();
  }

  get fileId() {
    return this.record?.file_id ?? null;
  }

  set(patch) {
    this.state = { ...this.state, ...patch };
    this.onChange?.(this);
  }

  pause() {
    if (this.state.phase !== 'uploading' && this.state.phase !== 'starting') return;
    this.controller?.abort();
    this.set({ phase: 'paused' });
  }

  resume() {
    if (this.state.phase === 'paused' || this.state.phase === 'failed') this.start();
  }

  async cancel() {
    this.controller?.abort();
    if (this.fileId) {
      forgetUpload(this.fileId, this.storage);
      await this.api.del(`/v1/files/${this.fileId}`).catch(() => {});
    }
    this.set({ phase: 'cancelled' });
  }

  async start() {
    const controller = new AbortController();
    this.controller = controller;
    this.set({ phase: 'starting', error: null });
    try {
      if (!this.record) await this.initiate();
      const session = await this.api.get(`/v1/files/${this.fileId}`);
      if (session.status === 'completed') return await this.finish();
      const { chunk_size: chunkSize } = this.record;
      let missing = session.missing_chunks;
      this.base = bytesDone(this.file.size, chunkSize, missing);
      this.inflight.clear();
      this.set({ phase: 'uploading', sent: this.base });
      const checksum = sha256(this.file, controller.signal);
      checksum.catch(() => {}); // awaited below; a pause must not surface as an unhandled rejection
      missing = [...missing];
      const worker = async () => {
        while (missing.length && !controller.signal.aborted) await this.sendChunk(missing.shift(), chunkSize, controller.signal);
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      if (controller.signal.aborted) return;
      this.set({ phase: 'completing', sent: this.file.size });
      await this.api.post(`/v1/files/${this.fileId}/complete`, { checksum: await checksum });
      await this.finish();
    } catch (error) {
      if (error.name === 'AbortError' || controller.signal.aborted) return;
      if (error.status === 404 && this.fileId) forgetUpload(this.fileId, this.storage); // expired or deleted
      this.set({ phase: 'failed', error: error.message || String(error) });
    }
  }

  async initiate() {
    const answer = await this.api.post('/v1/files/initiate', {
      filename: this.file.name,
      size: this.file.size,
      content_type: this.file.type || 'application/octet-stream',
    });
    this.record = {
      file_id: answer.file_id,
      chunk_size: answer.chunk_size,
      total_chunks: answer.total_chunks,
      expires_at: answer.expires_at,
      name: this.file.name,
      size: this.file.size,
      lastModified: this.file.lastModified,
      conversation_id: this.conversationId,
      user_id: this.userId,
      message_id: globalThis.crypto.randomUUID(), // the file message's idempotency key: sending it twice sends it once
    };
    remember(this.record, this.storage);
  }

  async sendChunk(index, chunkSize, signal) {
    const [start, end] = chunkRange(index, chunkSize, this.file.size);
    const blob = this.file.slice(start, end);
    for (let attempt = 1; ; attempt += 1) {
      try {
        const token = await this.api.token();
        await this.put(`/v1/files/${this.fileId}/chunks/${index}`, token, blob, (loaded) => this.progress(index, loaded), signal);
        this.inflight.delete(index);
        this.base += end - start;
        this.progress(null, 0);
        return;
      } catch (error) {
        this.inflight.delete(index);
        if (signal.aborted || error.name === 'AbortError') throw error;
        const retriable = error.status === 0 || error.status === 401 || error.status === 429 || error.status >= 500;
        if (!retriable || attempt >= CHUNK_TRIES) throw error;
        if (error.status === 401) await this.api.token({ force: true });
        await sleep((error.retryAfter ?? 0) * 1000 || 500 * 2 ** attempt);
      }
    }
  }

  progress(index, loaded) {
    if (index !== null) this.inflight.set(index, loaded);
    let sent = this.base;
    for (const value of this.inflight.values()) sent += value;
    this.set({ sent: Math.min(sent, this.file.size) });
  }

  async finish() {
    this.set({ phase: 'sending', sent: this.file.size });
    await this.onDone?.(this);
    forgetUpload(this.fileId, this.storage);
    this.set({ phase: 'done' });
  }
}
