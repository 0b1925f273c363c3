// WHEP playback and WHIP publishing against this server. The server is ICE-lite and puts its
// candidate in the answer, so no trickle is needed; leaving DELETEs the session resource.

export interface Session {
  pc: RTCPeerConnection;
  /** The session resource (Location); DELETE ends it. */
  resource: string;
  stop(): Promise<void>;
}

export class HttpError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

async function negotiate(pc: RTCPeerConnection, url: string, headers: Record<string, string>): Promise<Session> {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const resp = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', ...headers },
    body: offer.sdp,
  });
  if (resp.status !== 201) {
    let msg = `HTTP ${resp.status}`;
    try {
      msg = (await resp.json()).error.message;
    } catch {
      /* not JSON */
    }
    pc.close();
    throw new HttpError(resp.status, msg);
  }
  const resource = new URL(resp.headers.get('Location') ?? url, window.location.href).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
  return {
    pc,
    resource,
    async stop() {
      pc.close();
      await fetch(resource, { method: 'DELETE', keepalive: true }).catch(() => undefined);
    },
  };
}

/** Watch `stream` over WHEP into `video`. */
export async function playWhep(stream: string, video: HTMLVideoElement): Promise<Session> {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const media = new MediaStream();
  video.srcObject = media;
  pc.ontrack = (e) => media.addTrack(e.track);
  return negotiate(pc, `/whep/${encodeURIComponent(stream)}`, {});
}

/** Publish `media` to `stream` over WHIP with its stream key. */
export async function publishWhip(stream: string, key: string, media: MediaStream): Promise<Session> {
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
  return negotiate(pc, `/whip/${encodeURIComponent(stream)}`, { Authorization: `Bearer ${key}` });
}

/** Inbound video of a WHEP session: frames decoded and the receive delay, from getStats. */
export async function inboundVideo(pc: RTCPeerConnection): Promise<{ framesDecoded: number; delayMs: number | null }> {
  const stats = await pc.getStats();
  let framesDecoded = 0;
  let delayMs = null as number | null;
  let rtt = null as number | null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      framesDecoded = r.framesDecoded ?? 0;
      if (r.jitterBufferEmittedCount) delayMs = (r.jitterBufferDelay / r.jitterBufferEmittedCount) * 1000;
    }
    if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime * 1000;
  });
  if (delayMs !== null && rtt !== null) delayMs += rtt / 2;
  return { framesDecoded, delayMs };
}
