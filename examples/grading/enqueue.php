<?php
// A PHP web app hands companies to the grading pipeline through `warren
// serve` with the curl extension only (no AMQP library), then polls the
// ticket of the first. examples/grading/README.md, "Through the front door".
//
//     php examples/grading/enqueue.php http://127.0.0.1:8080 [TOKEN] < companies.jsonl
$base = $argv[1] ?? 'http://127.0.0.1:8080';
$token = $argv[2] ?? getenv('WARREN_SERVE_TOKEN');
$auth = $token ? ["Authorization: Bearer $token"] : [];

function call(string $method, string $url, array $headers, ?string $body = null): array {
    $c = curl_init($url);
    curl_setopt_array($c, [CURLOPT_CUSTOMREQUEST => $method, CURLOPT_RETURNTRANSFER => true,
        CURLOPT_HTTPHEADER => $headers, CURLOPT_TIMEOUT => 40]);
    if ($body !== null) curl_setopt($c, CURLOPT_POSTFIELDS, $body);
    $answer = curl_exec($c);
    $status = curl_getinfo($c, CURLINFO_RESPONSE_CODE);
    curl_close($c);
    return [$status, json_decode((string) $answer, true)];
}

// Up to 500 lines per request, each company's "id" as its message id (a
// retry after a timeout sends the same ids: the same jobs, no duplicates).
$batch = stream_get_contents(STDIN);
[$status, $answer] = call('POST', "$base/v1/stages/lookup/messages?id_field=id",
    array_merge($auth, ['Content-Type: application/x-ndjson']), $batch);
if ($status !== 202) { fwrite(STDERR, "refused ($status): " . json_encode($answer) . "\n"); exit(1); }
echo "accepted " . count($answer['ids']) . " companies\n";
// The ticket: wait (at most 30 s) until the first company's job is done.
[$status, $job] = call('GET', "$base/v1/jobs/" . rawurlencode($answer['ids'][0]) . "?wait=30s", $auth);
echo "job {$job['id']}: {$job['state']}\n";
