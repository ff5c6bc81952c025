"""Produce → consume latency of one Kafka hop against the broker on 127.0.0.1:9092, for a topic
with N partitions: how much a consumer's fetch costs per partition it reads.

    pip install confluent-kafka          # librdkafka >= 2.x; Debian's 2.0.2 cannot talk to Tansu
    python3 scripts/probe-fetch-latency.py PARTITIONS FETCH_WAIT_MAX_MS

It creates a topic of its own (lat<N>-<time>) and prints produce-ack and end-to-end p50/max over
30 messages.
"""
import time, sys
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b="127.0.0.1:9092"
parts=int(sys.argv[1]); wait=sys.argv[2]
t=f"lat{parts}-{int(time.time())}"
a=AdminClient({"bootstrap.servers":b}); [f.result() for f in a.create_topics([NewTopic(t,parts,1)]).values()]
p=Producer({"bootstrap.servers":b,"linger.ms":0,"acks":"all"})
c=Consumer({"bootstrap.servers":b,"group.id":t,"auto.offset.reset":"earliest","fetch.wait.max.ms":wait,"session.timeout.ms":6000})
c.subscribe([t])
while not c.assignment(): c.poll(0.1)
time.sleep(1)
lat=[];acks=[]
for i in range(30):
    s=time.time(); p.produce(t,key=str(i),value=str(s)); p.flush(); acks.append(time.time()-s)
    while True:
        m=c.poll(1)
        if m and not m.error(): lat.append(time.time()-float(m.value())); break
    time.sleep(0.05)
lat.sort(); acks.sort()
print(f"partitions={parts} wait={wait} produce-ack p50={acks[15]*1000:.1f}ms  e2e p50={lat[15]*1000:.1f}ms max={lat[-1]*1000:.1f}ms")
c.close()
