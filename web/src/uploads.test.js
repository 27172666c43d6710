import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { memoryStorage } from './memory-storage.js';
import { Upload, bytesDone, chunkRange, sameFile, savedUploads } from './uploads.js';

const CHUNK = 1024;

/** An in-memory files API: initiate, chunks, session, complete (checking the checksum like the server). */
function filesApi({ failChunk = null } = {}) {
  const files = new Map();
  let next = 0;
  const api = {
    token: async () => 'token',
    async post(path, body) {
      if (path === '/v1/files/initiate') {
        const id = `f${(next += 1)}`;
        files.set(id, { ...body, chunks: new Map(), total: Math.ceil(body.size / CHUNK), status: 'uploading' });
        return { file_id: id, chunk_size: CHUNK, total_chunks: Math.ceil(body.size / CHUNK), expires_at: 'later' };
      }
      const id = path.split('/')[3];
      const f = files.get(id);
      const bytes = Buffer.concat([...Array(f.total).keys()].map((i) => f.chunks.get(i)));
      f.checksum = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      if (body.checksum !== f.checksum) throw Object.assign(new Error('checksum mismatch'), { status: 422 });
      f.status = 'completed';
      return { status: 'completed' };
    },
    async get(path) {
      const f = files.get(path.split('/')[3]);
      const missing = [...Array(f.total).keys()].filter((i) => !f.chunks.has(i));
      return { status: f.status, missing_chunks: missing };
    },
    del: async () => null,
  };
  const put = async (url, token, blob, onProgress, signal) => {
    const [, , , id, , index] = url.split('/');
    if (failChunk?.(Number(index))) throw Object.assign(new Error('boom'), { status: 400 });
    if (signal.aborted) throw new DOMException('paused', 'AbortError');
    const bytes = Buffer.from(await blob.arrayBuffer());
    onProgress(bytes.length);
    files.get(id).chunks.set(Number(index), bytes);
  };
  return { api, put, files };
}

const fileOf = (size, name = 'report.bin') => {
  const bytes = new Uint8Array(size).map((_, i) => (i * 31) % 251);
  return new File([bytes], name, { type: 'application/octet-stream', lastModified: 1_700_000_000_000 });
};

describe('chunk arithmetic', () => {
  it('cuts the last chunk short and counts what the server has', () => {
    expect(chunkRange(2, 1000, 2500)).toEqual([2000, 2500]);
    expect(bytesDone(2500, 1000, [0, 2])).toBe(1000);
    expect(bytesDone(2500, 1000, [])).toBe(2500);
  });
});

describe('Upload', () => {
  it('uploads every chunk, completes with the SHA-256 and sends the file message once', async () => {
    const { api, put, files } = filesApi();
    const storage = memoryStorage();
    const sent = [];
    const file = fileOf(5 * CHUNK + 17);
    const upload = new Upload({ api, put, storage, file, conversationId: 'c1', userId: 'u1', onDone: (u) => sent.push(u.record.message_id) });
    await upload.start();
    expect(upload.state.phase).toBe('done');
    expect(upload.state.sent).toBe(file.size);
    expect(files.get('f1').status).toBe('completed');
    expect(sent).toHaveLength(1);
    expect(savedUploads('u1', storage)).toEqual([]);
  });

  it('after a reload, resumes with the same file and sends only the missing chunks', async () => {
    let broken = true; // the connection drops after chunk 2, then the page is reloaded
    const { api, put, files } = filesApi({ failChunk: (i) => broken && i >= 3 });
    const storage = memoryStorage();
    const file = fileOf(6 * CHUNK);
    const first = new Upload({ api, put, storage, file, conversationId: 'c1', userId: 'u1', onDone: () => {} });
    await first.start();
    expect(first.state.phase).toBe('failed');
    const [saved] = savedUploads('u1', storage);
    expect(saved).toMatchObject({ file_id: 'f1', name: 'report.bin', size: 6 * CHUNK, conversation_id: 'c1' });
    expect(sameFile(saved, fileOf(6 * CHUNK))).toBe(true);
    expect(sameFile(saved, fileOf(6 * CHUNK, 'other.bin'))).toBe(false);

    broken = false;
    const sentChunks = [];
    const resumed = new Upload({
      api, storage, file: fileOf(6 * CHUNK), conversationId: 'c1', userId: 'u1', saved, onDone: () => {},
      put: async (url, ...rest) => { sentChunks.push(Number(url.split('/').pop())); return put(url, ...rest); },
    });
    await resumed.start();
    expect(resumed.state.phase).toBe('done');
    expect(sentChunks.sort()).toEqual([3, 4, 5]);
    expect(files.get('f1').status).toBe('completed');
  });

  it('pauses without failing, and resumes to the end', async () => {
    const { api, files } = filesApi();
    const storage = memoryStorage();
    let release;
    const gate = new Promise((r) => (release = r));
    let upload;
    const put = async (url, token, blob, onProgress, signal) => {
      const index = Number(url.split('/').pop());
      if (index === 2 && !upload.resumedOnce) {
        upload.pause();
        release();
      }
      if (signal.aborted) throw new DOMException('paused', 'AbortError');
      onProgress(blob.size);
      files.get(url.split('/')[3]).chunks.set(index, Buffer.from(await blob.arrayBuffer()));
    };
    upload = new Upload({ api, put, storage, file: fileOf(4 * CHUNK), conversationId: 'c1', userId: 'u1', onDone: () => {} });
    const run = upload.start();
    await gate;
    await run;
    expect(upload.state.phase).toBe('paused');
    upload.resumedOnce = true;
    await upload.start();
    expect(upload.state.phase).toBe('done');
  });
});
