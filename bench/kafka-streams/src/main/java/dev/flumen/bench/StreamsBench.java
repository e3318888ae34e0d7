package dev.flumen.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams side of scripts/bench.sh: the same workloads as bench/flumen/*.toml.
 *
 * <pre>
 * java -jar flumen-bench-kafka-streams.jar WORKLOAD BOOTSTRAP INPUT OUTPUT APP_ID COMMIT_MS THREADS STATE_DIR
 * </pre>
 *
 * <ul>
 *   <li>{@code map}: JSON in, rename {@code amount} to {@code price}, drop {@code debug}, JSON out
 *       (Nexmark q1 shape; Flumen's {@code map} step with rename and drop).
 *   <li>{@code count}: re-key by the JSON field {@code user} (a repartition topic), keyed running
 *       count in RocksDB, out as {@code {"user": K, "count": N}} keyed by K (Flumen's {@code key_by}
 *       + {@code count}).
 *   <li>{@code dedupe}: re-key by the JSON field {@code ev} (a repartition topic) and pass the
 *       first record of each key, remembered in a RocksDB key-value store (Flumen's {@code dedupe}
 *       by field; Kafka Streams has no built-in dedupe, so a processor as its docs suggest).
 *   <li>{@code window}: re-key by {@code user}, count per one-minute tumbling window of the
 *       record timestamp, one result per window once it closes ({@code suppress}), out as {@code
 *       {"user", "window_start", "window_end", "count"}} keyed {@code user@start} (Flumen's {@code
 *       count} with a tumbling window). A grace of six minutes (bench/harness/workload.rs
 *       says why): stream time is the highest timestamp a task has seen, so without one the
 *       records of a source partition that runs behind the others would be dropped as late.
 * </ul>
 */
public final class StreamsBench {
  private static final ObjectMapper JSON = new ObjectMapper();

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 8) {
      System.err.println(
          "usage: StreamsBench map|count|dedupe|window BOOTSTRAP INPUT OUTPUT APP_ID COMMIT_MS THREADS STATE_DIR");
      System.exit(2);
    }
    String workload = args[0];
    Properties props = new Properties();
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[4]);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(args[5]));
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[6]));
    props.put(StreamsConfig.STATE_DIR_CONFIG, args[7]);
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    // static membership, as Flumen uses: a restarted instance (recovery runs) takes its tasks
    // back without waiting out its dead predecessor's session (Streams appends a thread index)
    props.put(StreamsConfig.consumerPrefix("group.instance.id"), args[4] + "-0");

    Topology topology = build(workload, args[2], args[3]);
    KafkaStreams streams = new KafkaStreams(topology, props);
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setUncaughtExceptionHandler(
        e -> {
          System.err.println("StreamsBench: stream thread failed: " + e);
          stopped.countDown();
          return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
              .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close();
                  stopped.countDown();
                }));
    streams.start();
    stopped.await();
  }

  static Topology build(String workload, String input, String output) {
    StreamsBuilder b = new StreamsBuilder();
    KStream<byte[], byte[]> in =
        b.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()));
    switch (workload) {
      case "map" ->
          in.mapValues(StreamsBench::renameAndDrop)
              .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
      case "count" ->
          in.selectKey((k, v) -> parse(v).get("user").asText())
              .groupByKey(Grouped.with(Serdes.String(), Serdes.ByteArray()))
              .count(Materialized.as("counts"))
              .toStream()
              .mapValues(
                  (k, n) -> {
                    ObjectNode o = JSON.createObjectNode();
                    o.put("user", k);
                    o.put("count", n);
                    return bytes(o);
                  })
              .to(output, Produced.with(Serdes.String(), Serdes.ByteArray()));
      case "dedupe" -> {
        b.addStateStore(
            Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore("seen"), Serdes.String(), Serdes.Long()));
        in.selectKey((k, v) -> parse(v).get("ev").asText())
            .repartition(Repartitioned.with(Serdes.String(), Serdes.ByteArray()))
            .process(FirstOfKey::new, "seen")
            .to(output, Produced.with(Serdes.String(), Serdes.ByteArray()));
      }
      case "window" ->
          in.selectKey((k, v) -> parse(v).get("user").asText())
              .groupByKey(Grouped.with(Serdes.String(), Serdes.ByteArray()))
              .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ofMinutes(6)))
              .count(Materialized.as("window-counts"))
              .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
              .toStream()
              .map(
                  (w, n) -> {
                    ObjectNode o = JSON.createObjectNode();
                    o.put("user", w.key());
                    o.put("window_start", w.window().start());
                    o.put("window_end", w.window().end());
                    o.put("count", n);
                    return KeyValue.pair(w.key() + "@" + w.window().start(), bytes(o));
                  })
              .to(output, Produced.with(Serdes.String(), Serdes.ByteArray()));
      default -> throw new IllegalArgumentException("unknown workload " + workload);
    }
    return b.build();
  }

  /** Forwards a key's first record; later ones are dropped (the key is remembered). */
  static final class FirstOfKey implements Processor<String, byte[], String, byte[]> {
    private ProcessorContext<String, byte[]> context;
    private KeyValueStore<String, Long> seen;

    @Override
    public void init(ProcessorContext<String, byte[]> context) {
      this.context = context;
      this.seen = context.getStateStore("seen");
    }

    @Override
    public void process(Record<String, byte[]> record) {
      if (seen.get(record.key()) == null) {
        seen.put(record.key(), record.timestamp());
        context.forward(record);
      }
    }
  }

  private static byte[] renameAndDrop(byte[] value) {
    ObjectNode o = parse(value);
    ObjectNode out = JSON.createObjectNode();
    // keep field order as Flumen does: a rename keeps the field's place
    o.fields()
        .forEachRemaining(
            e -> {
              switch (e.getKey()) {
                case "amount" -> out.set("price", e.getValue());
                case "debug" -> {}
                default -> out.set(e.getKey(), e.getValue());
              }
            });
    return bytes(out);
  }

  private static ObjectNode parse(byte[] value) {
    try {
      return (ObjectNode) JSON.readTree(value);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private static byte[] bytes(ObjectNode o) {
    try {
      return JSON.writeValueAsString(o).getBytes(StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
