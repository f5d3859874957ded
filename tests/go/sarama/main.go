// Sarama 1.22 (Kafka 2.1.0 protocol versions) against kelp; see tests/old_clients.rs.
//
//	sarama admin ADDR TOPIC PARTITIONS      create, list and describe a topic
//	sarama produce ADDR TOPIC N             N records to partition 0, synchronously
//	sarama consume ADDR GROUP TOPIC N       read N records as a group member, commit, leave
//	sarama offsets ADDR GROUP TOPIC         the group's committed offset of partition 0
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/Shopify/sarama"
)

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "sarama-old"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewManualPartitioner
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	c.Consumer.Return.Errors = true
	c.Metadata.Retry.Max = 10
	return c
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 4 {
		fail("usage", fmt.Errorf("sarama admin|produce|consume|offsets ADDR ..."))
	}
	addrs := []string{os.Args[2]}
	switch os.Args[1] {
	case "admin":
		admin(addrs, os.Args[3], os.Args[4])
	case "produce":
		produce(addrs, os.Args[3], os.Args[4])
	case "consume":
		consume(addrs, os.Args[3], os.Args[4], os.Args[5])
	case "offsets":
		offsets(addrs, os.Args[3], os.Args[4])
	default:
		fail("usage", fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func admin(addrs []string, topic, partitions string) {
	n, _ := strconv.Atoi(partitions)
	a, err := sarama.NewClusterAdmin(addrs, config())
	if err != nil {
		fail("admin", err)
	}
	defer a.Close()
	err = a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: int32(n), ReplicationFactor: 1}, false)
	if err != nil {
		fail("CreateTopic", err)
	}
	fmt.Println("created", topic)
	err = a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: int32(n), ReplicationFactor: 1}, false)
	fmt.Println("create again:", err)
	topics, err := a.ListTopics()
	if err != nil {
		fail("ListTopics", err)
	}
	if d, ok := topics[topic]; ok {
		fmt.Println("listed", topic, d.NumPartitions)
	}
	entries, err := a.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		fail("DescribeConfig", err)
	}
	for _, e := range entries {
		fmt.Println("config", e.Name, e.Value)
	}
}

func produce(addrs []string, topic, count string) {
	n, _ := strconv.Atoi(count)
	p, err := sarama.NewSyncProducer(addrs, config())
	if err != nil {
		fail("producer", err)
	}
	defer p.Close()
	for i := 0; i < n; i++ {
		m := &sarama.ProducerMessage{
			Topic:     topic,
			Partition: 0,
			Key:       sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("v%d", i)),
			Timestamp: time.Unix(1600000000+int64(i), 0),
		}
		part, off, err := p.SendMessage(m)
		if err != nil {
			fail("SendMessage", err)
		}
		fmt.Println("produced", part, off)
	}
}

type handler struct {
	want int
	got  int
	done chan struct{}
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		if h.got >= h.want {
			return nil
		}
		fmt.Println("consumed", m.Partition, m.Offset, string(m.Key), string(m.Value), m.Timestamp.Unix())
		s.MarkMessage(m, "")
		h.got++
		if h.got == h.want {
			close(h.done)
			return nil
		}
	}
	return nil
}

func consume(addrs []string, group, topic, count string) {
	n, _ := strconv.Atoi(count)
	g, err := sarama.NewConsumerGroup(addrs, group, config())
	if err != nil {
		fail("consumer group", err)
	}
	go func() {
		for err := range g.Errors() {
			fmt.Fprintln(os.Stderr, "group error:", err)
		}
	}()
	h := &handler{want: n, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil {
				fmt.Fprintln(os.Stderr, "consume:", err)
				time.Sleep(200 * time.Millisecond)
			}
			select {
			case <-h.done:
				return
			default:
			}
		}
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		fail("consume", fmt.Errorf("only %d of %d records", h.got, n))
	}
	// Close commits what was marked and leaves the group.
	if err := g.Close(); err != nil {
		fail("close", err)
	}
}

func offsets(addrs []string, group, topic string) {
	a, err := sarama.NewClusterAdmin(addrs, config())
	if err != nil {
		fail("admin", err)
	}
	defer a.Close()
	r, err := a.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0}})
	if err != nil {
		fail("ListConsumerGroupOffsets", err)
	}
	b := r.GetBlock(topic, 0)
	if b == nil {
		fail("ListConsumerGroupOffsets", fmt.Errorf("no block"))
	}
	fmt.Println("committed", b.Offset, int16(b.Err))
}
