/**
 * The bench in a real VM (`ivshmem bench --vm`): one guest booted with the harness of the guest
 * tests (qemu-guest.ts), Node inside it driving the real ivshmem-doorbell device through VFIO
 * (guest-agent.ts), Node peers on the host (the bench's forked workers), the same workload code
 * as the host matrix (workloads.ts over the device models of lib/devices/). Every cell is counted
 * twice: by the models, and by instruments that are not the package's — QEMU's trace of the
 * device's Doorbell writes (`ioeventfd=off`, `-trace memory_region_ops_write`) and the guest
 * kernel's count of the device's MSI-X interrupts. Then two bare round trips host → guest → host:
 * Node in the guest, and a minimal C pong (bench/vm/c/vfio-pong.c) in the same guest.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Peer, PeerServer } from '../../lib/index.js';
import { LEGACY_STATE_BYTES } from '../../lib/devices/index.js';
import { compileBaseline, compilerName } from '../c-baseline.js';
import { VM_BUSY_POLL_MICROS } from '../designs.js';
import { Histogram } from '../histogram.js';
import { layoutLanes } from '../lane.js';
import { mergedLatency, sumCollected } from '../matrix.js';
import { uniqueSocketPath } from '../paths.js';
import { BenchError, withTimeout, type Worker, WorkerPool } from '../pool.js';
import type { Progress } from '../progress.js';
import type { Collected, Connected, RoleSpec } from '../protocol.js';
import { Session, SESSION_SHM_SIZE, type PlanOutcome, type RunPlan } from '../session.js';
import { VM_DESIGNS, VM_WORKLOADS, type AdapterName, type ResolvedOptions, type VmCellResult, type VmDesignName, type VmDirection, type VmLatency, type VmReport, type VmWorkloadName } from '../types.js';
import { TraceReader } from './counts.js';
import { GuestWorker } from './guest-worker.js';
import { Mailbox, mailboxBytes } from './mailbox.js';
import { vmCellName } from './report-vm.js';
import { bootGuest, guestAssets, hardwareKvm, MISSING_TOOLS_FIX, missingGuestTools, type Guest } from './qemu-guest.js';

export const VFIO_PONG_SOURCE = join('bench', 'vm', 'c', 'vfio-pong.c');
/** The device as the VM part runs it: every Doorbell write reaches QEMU's traced MMIO handler. */
export const VM_DEVICE = 'ivshmem-doorbell,vectors=1,ioeventfd=off';
/** Payload bytes of each direction of the mailbox (a reply carries a latency histogram: ~10 KB). */
const MAILBOX_PAYLOAD = 64 * 1024;
/** Round trips before the measured ones (JIT, caches, the first MSI-X). */
const WARMUP_ROUNDS = 50;

export interface VmCellSpec {
  workload: VmWorkloadName;
  design: VmDesignName;
  busyPoll: 'none' | 'guest' | 'host';
  producers: number;
}

/** The cells of the VM part: every workload × design, and the bitmask again with the receiver busy-polling. */
export function vmCells(options: Pick<ResolvedOptions, 'designs' | 'vmProducers'>): VmCellSpec[] {
  const designs = VM_DESIGNS.filter((d) => options.designs.includes(d));
  const cells: VmCellSpec[] = [];
  for (const workload of VM_WORKLOADS) {
    const producers = workload === 'fan-in' ? options.vmProducers : 1;
    for (const design of designs) {
      cells.push({ workload, design, busyPoll: 'none', producers });
      if (design === 'bitmask') cells.push({ workload, design, busyPoll: workload === 'stream-to-host' ? 'host' : 'guest', producers });
    }
  }
  return cells;
}

export function vmCellLabel(c: VmCellSpec): string {
  return `vm ${vmCellName(c)}`;
}

/** Messages of a cell, rounded so that every producer sends the same number and a ping gets its pong. */
function cellMessages(c: VmCellSpec, options: Pick<ResolvedOptions, 'vmMessages'>): number {
  const n = options.vmMessages[c.workload];
  return c.workload === 'fan-in' ? Math.max(1, Math.floor(n / c.producers)) * c.producers : n;
}

/**
 * The roles of a cell: host workers 0..k-1, then the guest (the last worker). Lanes start at
 * `dataOffset`; the guest is `guestId`.
 */
export function planVmCell(
  c: VmCellSpec,
  options: Pick<ResolvedOptions, 'vmMessages' | 'slots' | 'workNs' | 'backToBack'>,
  hostIds: readonly number[],
  guestId: number,
  dataOffset: number,
): RunPlan {
  const messages = cellMessages(c, options);
  const k = c.producers;
  const lanes = layoutLanes(dataOffset, Math.max(2, k), options.slots, 1);
  const sparse = !options.backToBack;
  const roles: RoleSpec[] = [];
  switch (c.workload) {
    case 'ping-pong':
      roles.push({ kind: 'ping', out: lanes[0]!, in: lanes[1]!, other: guestId, messages, sparse });
      roles.push({ kind: 'pong', out: lanes[1]!, in: lanes[0]!, other: hostIds[0]!, messages, sparse });
      break;
    case 'stream-to-guest':
      roles.push({ kind: 'producer', lane: lanes[0]!, consumer: guestId, messages });
      roles.push({ kind: 'consumer', lanes: [lanes[0]!], index: 0, messages, workNs: options.workNs });
      break;
    case 'stream-to-host':
      roles.push({ kind: 'consumer', lanes: [lanes[0]!], index: 0, messages, workNs: options.workNs });
      roles.push({ kind: 'producer', lane: lanes[0]!, consumer: hostIds[0]!, messages });
      break;
    case 'fan-in':
      for (let i = 0; i < k; i++) roles.push({ kind: 'producer', lane: lanes[i]!, consumer: guestId, messages: messages / k });
      roles.push({ kind: 'consumer', lanes: lanes.slice(0, k), index: 0, messages, workNs: options.workNs });
      break;
  }
  const polling: AdapterName = 'bitmask-busypoll';
  const guestAdapter: AdapterName = c.busyPoll === 'guest' ? polling : c.design;
  const hostAdapter: AdapterName = c.busyPoll === 'host' ? polling : c.design;
  return {
    adapter: c.design,
    adapters: [...roles.slice(0, -1).map(() => hostAdapter), guestAdapter],
    roles,
    label: vmCellLabel(c),
  };
}

/** Messages that crossed each way in a cell. */
export function crossings(c: VmCellSpec, messages: number): { toHost: number; toGuest: number } {
  switch (c.workload) {
    case 'ping-pong':
      return { toHost: messages / 2, toGuest: messages / 2 };
    case 'stream-to-host':
      return { toHost: messages, toGuest: 0 };
    default:
      return { toHost: 0, toGuest: messages };
  }
}

function direction(
  messages: number,
  modelled: number,
  measured: number,
  instrument: VmDirection['instrument'],
  senderSignals: number,
  other: number,
  suppressed: number,
): VmDirection {
  const per = (n: number): number | null => (messages === 0 ? null : n / messages);
  return {
    messages,
    modelled,
    measured,
    instrument,
    modelledPerMsg: per(modelled),
    measuredPerMsg: per(measured),
    ratio: measured === 0 ? (modelled === 0 ? 1 : null) : modelled / measured,
    senderSignals,
    other,
    suppressed,
  };
}

/**
 * A cell's result from what the workers reported (the guest's is the last) and what QEMU traced
 * between `prepared` and `collected`.
 */
export function vmCellResult(c: VmCellSpec, messages: number, outcome: PlanOutcome, tracedDoorbells: number, elapsedMs: number): VmCellResult {
  const guest: Collected = outcome.collected.at(-1)!;
  const hosts = sumCollected(outcome.collected.slice(0, -1));
  if (guest.totals === null) throw new BenchError('the guest reported no counts');
  const kernel = guest.measured?.interrupts;
  if (kernel === undefined) throw new BenchError('the guest reported no kernel interrupt count');
  const { toHost, toGuest } = crossings(c, messages);
  const guestDoorbells = guest.trapsByRegister?.['Doorbell']?.writes ?? 0;
  const hostDoorbells = hosts.trapsByRegister['Doorbell']?.writes ?? 0;
  let rttP50Us: number | null = null;
  let rttP99Us: number | null = null;
  if (c.workload === 'ping-pong') {
    // The ping records round trip / 2 (ns), on the host's clock only.
    const h = mergedLatency([outcome.finished[0]!]);
    rttP50Us = (h.quantile(0.5) ?? Number.NaN) / 500;
    rttP99Us = (h.quantile(0.99) ?? Number.NaN) / 500;
  }
  return {
    workload: c.workload,
    design: c.design,
    busyPoll: c.busyPoll,
    producers: c.producers,
    messages,
    elapsedMs,
    msgsPerSec: messages / (elapsedMs / 1000),
    rttP50Us,
    rttP99Us,
    guestToHost: direction(toHost, guestDoorbells, tracedDoorbells, 'qemu-trace', guest.measured?.doorbellStores ?? 0, hosts.totals.injections, guest.totals.suppressed),
    hostToGuest: direction(toGuest, guest.totals.injections, kernel, 'guest-kernel', hosts.totals.eventfdWrites, hostDoorbells, hosts.totals.suppressed),
  };
}

function failedVmCell(c: VmCellSpec, messages: number, error: string): VmCellResult {
  return { ...c, messages, elapsedMs: null, msgsPerSec: null, rttP50Us: null, rttP99Us: null, guestToHost: null, hostToGuest: null, error };
}

function unavailableVm(reason: string, started: number): VmReport {
  return {
    available: false,
    reason,
    accel: hardwareKvm() ? 'kvm' : 'tcg',
    guestKernel: null,
    bootMs: null,
    device: VM_DEVICE,
    busyPollMicros: VM_BUSY_POLL_MICROS,
    cells: [],
    latency: [],
    nodeVsC: null,
    durationMs: Date.now() - started,
  };
}

function latencyOf(name: string, description: string, rtts: Histogram | string, rounds: number): VmLatency {
  if (typeof rtts === 'string') return { name, available: false, reason: rtts, rounds, rttP50Us: null, rttP99Us: null, description };
  return { name, available: true, rounds: rtts.count, rttP50Us: (rtts.quantile(0.5) ?? Number.NaN) / 1000, rttP99Us: (rtts.quantile(0.99) ?? Number.NaN) / 1000, description };
}

/** Rings `target` on vector 0 and waits for `pinger`'s own vector 0, `warmup + rounds` times; the last `rounds` round trips in ns. */
async function pingRounds(pinger: Peer, target: number, rounds: number, warmup: number, timeoutMs: number): Promise<Histogram> {
  const h = new Histogram();
  let waiting: (() => void) | null = null;
  const onInterrupt = (vector: number): void => {
    if (vector !== 0 || waiting === null) return;
    const w = waiting;
    waiting = null;
    w();
  };
  pinger.on('interrupt', onInterrupt);
  try {
    for (let i = 0; i < warmup + rounds; i++) {
      const back = new Promise<void>((resolve) => (waiting = resolve));
      const t0 = performance.now();
      pinger.ring(target, 0);
      await withTimeout(back, timeoutMs, `the pong of round trip ${i + 1}`);
      if (i >= warmup) h.record((performance.now() - t0) * 1e6);
    }
  } finally {
    pinger.off('interrupt', onInterrupt);
  }
  return h;
}

/** The guest's script: bind the device to vfio-pci, run the agent, then the C pong the host names in /results/cpong.args. */
function guestScript(params: object): string {
  return `
addr=; group=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then addr=$(basename $d); group=$(basename $(readlink $d/iommu_group)); fi
done
[ -n "$addr" ] || { echo "bench vm: no ivshmem device"; exit 20; }
echo vfio-pci > /sys/bus/pci/devices/$addr/driver_override
[ -e /sys/bus/pci/devices/$addr/driver ] && echo $addr > /sys/bus/pci/devices/$addr/driver/unbind
echo $addr > /sys/bus/pci/drivers_probe
node dist/bench/vm/guest-agent.js '${JSON.stringify(params)}' || exit 21
set -- $(cat /results/cpong.args)
[ "$1" = none ] && exit 0
"$1" $addr $group "$2" "$3" "$4" || exit 22
`;
}

export interface VmHooks {
  progress: Progress;
  signal?: AbortSignal;
}

/** The VM part of a run; never throws for a guest that cannot boot here (the report says why). */
export async function runVm(options: ResolvedOptions, hooks: VmHooks): Promise<VmReport> {
  const started = Date.now();
  const { progress, signal } = hooks;
  const cells = vmCells(options);
  progress.grow(cells.length + 4);
  const missing = missingGuestTools();
  if (missing.length > 0) {
    progress.step('vm');
    progress.note(`vm part skipped: ${missing.join(', ')} not on PATH; ${MISSING_TOOLS_FIX}`);
    return unavailableVm(`${missing.join(', ')} not on PATH; ${MISSING_TOOLS_FIX}`, started);
  }
  progress.step('vm: guest kernel and initramfs, C pong');
  let assetsKernel: string;
  try {
    assetsKernel = (await guestAssets()).kernelVersion;
  } catch (error) {
    const reason = `no guest kernel: ${(error as Error).message.split('\n')[0]}`;
    progress.note(`vm part skipped: ${reason}`);
    return unavailableVm(reason, started);
  }
  let cPong: string | null = null;
  let cPongReason = '';
  try {
    cPong = await compileBaseline(compilerName(), VFIO_PONG_SOURCE);
  } catch (error) {
    cPongReason = (error as Error).message;
  }
  progress.done();

  const server = PeerServer.listen({ socketPath: uniqueSocketPath('vm'), bitmask: true, vectors: 1, size: SESSION_SHM_SIZE, maxPeers: 64, leaseTimeout: 0 });
  const pool = new WorkerPool();
  const traceDir = mkdtempSync(join(tmpdir(), 'ivshmem-vm-trace-'));
  const traceFile = join(traceDir, 'qemu.trace');
  let guest: Guest | null = null;
  let gw: GuestWorker | null = null;
  let trace: TraceReader | null = null;
  let pinger: Peer | null = null;
  const onAbort = (): void => {
    void guest?.close();
    void pool.killAll();
  };
  signal?.addEventListener('abort', onAbort);
  const checkAbort = (): void => {
    if (signal?.aborted) throw new BenchError('interrupted');
  };
  try {
    const hostCount = Math.max(...cells.map((c) => c.producers), 1);
    const hosts: Worker[] = await pool.ensure(hostCount, options.timeoutMs);
    const hostIds: number[] = [];
    for (const w of hosts) hostIds.push((await withTimeout(w.request<Connected>({ type: 'connect', socketPath: server.socketPath }), options.timeoutMs, 'a host worker to connect')).id);

    const bytes = mailboxBytes(MAILBOX_PAYLOAD);
    const mailboxOffset = Math.floor((server.size - LEGACY_STATE_BYTES - bytes) / 64) * 64;
    new Mailbox(server.shm.buffer, mailboxOffset, MAILBOX_PAYLOAD, 'host').reset();
    const lifetimeMs = 120_000 + (cells.length + 2) * options.timeoutMs;
    progress.step('vm: boot the guest');
    guest = await bootGuest({
      name: 'bench guest',
      script: guestScript({ mailboxOffset, mailboxBytes: MAILBOX_PAYLOAD, lifetimeMs }),
      ivshmemSocket: server.socketPath,
      vfio: true,
      deviceProperties: 'ioeventfd=off',
      trace: { events: ['memory_region_ops_write'], file: traceFile },
      timeoutMs: lifetimeMs + 60_000,
    });
    gw = new GuestWorker(guest, server.shm.buffer, mailboxOffset, MAILBOX_PAYLOAD, hosts.length);
    await gw.hello(120_000);
    const guestId = (await withTimeout(gw.request<Connected>({ type: 'connect', socketPath: server.socketPath }), options.timeoutMs, 'the guest to connect')).id;
    await withTimeout(gw.request({ type: 'know', ids: hostIds }), options.timeoutMs, 'the guest to see the host peers');
    await withTimeout(Promise.all(hosts.map((w) => w.request({ type: 'know', ids: [guestId] }))), options.timeoutMs, 'the host peers to see the guest');
    const bootMs = guest.bootMs;
    progress.done(`booted in ${((bootMs ?? 0) / 1000).toFixed(1)} s, guest peer ${guestId}`);
    trace = new TraceReader(traceFile);

    const results: VmCellResult[] = [];
    for (const c of cells) {
      checkAbort();
      progress.step(vmCellLabel(c));
      const messages = cellMessages(c, options);
      try {
        const workers = [...hosts.slice(0, c.producers), gw];
        const session = Session.attach(server, workers, [...hostIds.slice(0, c.producers), guestId], { offset: mailboxOffset, length: bytes });
        const plan = planVmCell(c, options, hostIds, guestId, server.dataOffset);
        let t0 = 0;
        let t1 = 0;
        let traced = 0;
        const tr = trace;
        const outcome = await session.run(plan, options.timeoutMs, process.hrtime.bigint(), {
          prepared: () => {
            tr.read(); // what the set-up wrote is not the cell's
            t0 = performance.now();
          },
          delivered: () => (t1 = performance.now()),
          collected: () => (traced = tr.read().writes),
        });
        const result = vmCellResult(c, messages, outcome, traced, t1 - t0);
        results.push(result);
        progress.done(
          `${Math.round(result.msgsPerSec ?? 0).toLocaleString('en-US')} msg/s; g→h ${result.guestToHost!.measured} Doorbell writes (model ${result.guestToHost!.modelled}), h→g ${result.hostToGuest!.measured} interrupts (model ${result.hostToGuest!.modelled})`,
        );
      } catch (error) {
        checkAbort();
        const message = (error as Error).message;
        results.push(failedVmCell(c, messages, message));
        progress.note(`✗ ${vmCellLabel(c)} failed: ${message.split('\n')[0]}`);
        if (!gw.alive) throw error;
      }
    }

    // ------------------------------------------------------------ bare round trips
    checkAbort();
    progress.step('vm: round trip, Node pong in the guest');
    const rounds = options.vmRoundTrips;
    pinger = await Peer.connect(server.socketPath, { bitmask: true, timeout: 10_000 });
    await pinger.waitForPeer(guestId, 10_000);
    await withTimeout(gw.request({ type: 'know', ids: [pinger.id] }), options.timeoutMs, 'the guest to see the pinger');
    let node: Histogram | string;
    try {
      await withTimeout(gw.request({ type: 'node-pong', host: pinger.id }), options.timeoutMs, 'the Node pong to start');
      node = await pingRounds(pinger, guestId, rounds, WARMUP_ROUNDS, 10_000);
      await withTimeout(gw.request({ type: 'node-pong-end' }), options.timeoutMs, 'the Node pong to end');
    } catch (error) {
      node = `failed: ${(error as Error).message.split('\n')[0]}`;
    }
    progress.done(typeof node === 'string' ? node : `p50 ${((node.quantile(0.5) ?? 0) / 1000).toFixed(1)} µs`);

    checkAbort();
    progress.step('vm: round trip, C pong in the guest');
    writeFileSync(join(guest.shareDir, 'cpong.args'), cPong === null ? 'none\n' : `${cPong} ${pinger.id} ${rounds + WARMUP_ROUNDS} 30\n`);
    await withTimeout(gw.request({ type: 'vm-exit' }), options.timeoutMs, 'the guest agent to exit');
    let c: Histogram | string;
    if (cPong === null) c = `unavailable: ${cPongReason}`;
    else {
      try {
        const ready = await guest.waitForLine(/VFIO-PONG-(READY|ERROR)/, 30_000);
        if (ready.includes('ERROR')) throw new BenchError(ready.trim());
        c = await pingRounds(pinger, guestId, rounds, WARMUP_ROUNDS, 10_000);
        await guest.waitForLine('VFIO-PONG-DONE', 10_000);
      } catch (error) {
        c = `failed: ${(error as Error).message.split('\n')[0]}`;
      }
    }
    progress.done(typeof c === 'string' ? c : `p50 ${((c.quantile(0.5) ?? 0) / 1000).toFixed(1)} µs`);
    const result = await guest.result(30_000);
    if (result.status !== 0) progress.note(`the guest's script ended with status ${result.status}${guest.diagnostics()}`);

    const latency = [
      latencyOf('node-pong', 'Node in the guest: GuestDevice, an interrupt event on vector 0 answered by ring(host, 0)', node, rounds),
      latencyOf('c-pong', 'C in the guest (bench/vm/c/vfio-pong.c, cc -O2): poll() + read() on the MSI-X eventfd, one Doorbell store', c, rounds),
    ];
    const [n, cc] = latency;
    return {
      available: true,
      accel: hardwareKvm() ? 'kvm' : 'tcg',
      guestKernel: assetsKernel,
      bootMs,
      device: VM_DEVICE,
      busyPollMicros: VM_BUSY_POLL_MICROS,
      cells: results,
      latency,
      nodeVsC: n!.rttP50Us !== null && cc!.rttP50Us !== null ? n!.rttP50Us / cc!.rttP50Us : null,
      durationMs: Date.now() - started,
    };
  } catch (error) {
    checkAbort();
    const reason = `the VM part failed: ${(error as Error).message}`;
    progress.note(reason.split('\n')[0]!);
    return unavailableVm(reason, started);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    pinger?.close();
    trace?.close();
    gw?.close();
    await guest?.close();
    await pool.close();
    server.close();
    rmSync(traceDir, { recursive: true, force: true });
  }
}
