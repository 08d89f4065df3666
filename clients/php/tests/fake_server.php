<?php
// A router for `php -S`: records each request (method, URI, headers, body)
// as a JSON line in $FAKE_DIR/seen.jsonl and answers with the next line of
// $FAKE_DIR/answers.jsonl ([status, headers, body]), or 200 {}.
$dir = getenv('FAKE_DIR');
$seen = ['method' => $_SERVER['REQUEST_METHOD'], 'uri' => $_SERVER['REQUEST_URI'],
         'headers' => array_change_key_case(getallheaders()), 'body' => file_get_contents('php://input')];
$lock = fopen("$dir/lock", 'c');
flock($lock, LOCK_EX);
file_put_contents("$dir/seen.jsonl", json_encode($seen) . "\n", FILE_APPEND);
$answers = file("$dir/answers.jsonl", FILE_IGNORE_NEW_LINES) ?: [];
$answer = $answers === [] ? [200, [], new stdClass()] : json_decode(array_shift($answers), true);
file_put_contents("$dir/answers.jsonl", implode('', array_map(fn ($a) => "$a\n", $answers)));
flock($lock, LOCK_UN);
http_response_code($answer[0]);
foreach ($answer[1] as $name => $value) {
    header("$name: $value");
}
header('Content-Type: application/json');
echo json_encode($answer[2]);
