// kafka-go 0.2.1 (Produce v2, Fetch v2: message format v1) against kelp; see
// tests/old_clients.rs.
//
//	kafkago ADDR TOPIC N    write N records to partition 0, then read them back
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage", fmt.Errorf("kafkago ADDR TOPIC N"))
	}
	addr, topic := os.Args[1], os.Args[2]
	n, _ := strconv.Atoi(os.Args[3])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", addr, topic, 0)
	if err != nil {
		fail("DialLeader", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:   []byte(fmt.Sprintf("k%d", i)),
			Value: []byte(fmt.Sprintf("v%d", i)),
			Time:  time.Unix(0, (1600000000000+int64(i))*int64(time.Millisecond)),
		}
	}
	if _, err := conn.WriteMessages(msgs...); err != nil {
		fail("WriteMessages", err)
	}
	fmt.Println("written", n)
	if _, err := conn.Seek(0, kafka.SeekAbsolute); err != nil {
		fail("Seek", err)
	}
	batch := conn.ReadBatch(1, 1<<20)
	for i := 0; i < n; i++ {
		m, err := batch.ReadMessage()
		if err != nil {
			fail("ReadMessage", err)
		}
		fmt.Println("read", m.Offset, string(m.Key), string(m.Value), m.Time.UnixNano()/int64(time.Millisecond))
	}
	batch.Close()
}
