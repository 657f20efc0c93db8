//! The demo dataset: Hebei province with its real city- and county-level divisions
//! (`data/hebei-divisions.csv`) and generated enterprises and people. Deterministic: the same
//! size gives the same directory, byte for byte.
//!
//! Codes: city codes follow GB/T 2260. County codes are our own (city prefix + a sequence
//! number in file order), as are 雄安新区 (133100) and the province-administered 定州市
//! (139001) and 辛集市 (139002); they have no districts in the file, so their enterprises sit
//! directly under them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::import::{PersonRecord, UnitRecord};
use super::org::{Level, PersonRole, Sector, child_path};

const DIVISIONS: &str = include_str!("../../data/hebei-divisions.csv");
pub const PROVINCE_CODE: &str = "130000";
const EXTRA_CITY_CODES: &[(&str, &str)] = &[
    ("雄安新区", "133100"),
    ("定州市", "139001"),
    ("辛集市", "139002"),
];

/// Cities with coal mines in the demo (Hebei's coal lies mostly in these).
const COAL_CITIES: &[&str] = &["唐山市", "邯郸市", "邢台市", "张家口市"];

const SURNAMES: &[char] = &[
    '王', '李', '张', '刘', '陈', '杨', '赵', '黄', '周', '吴', '徐', '孙', '胡', '朱', '高', '林',
    '何', '郭', '马', '罗', '梁', '宋', '郑', '谢', '韩', '唐', '冯', '于', '董', '萧',
];
const GIVEN: &[char] = &[
    '伟', '芳', '娜', '敏', '静', '丽', '强', '磊', '军', '洋', '勇', '艳', '杰', '娟', '涛', '明',
    '超', '秀', '霞', '平', '刚', '桂', '英', '华', '建', '国', '志', '文', '红', '海',
];
const FIRM_WORDS: &[&str] = &[
    "宏达", "鑫源", "恒通", "华泰", "金石", "永安", "兴业", "瑞丰", "冀东", "燕山", "太行", "长城",
    "新兴", "天成", "德润", "广源",
];

#[derive(Debug, Clone)]
pub struct DemoDirectory {
    pub units: Vec<UnitRecord>,
    pub people: Vec<PersonRecord>,
}

/// A demo login printed by `serve --demo`.
#[derive(Debug, Clone, Copy)]
pub struct DemoLogin {
    pub username: &'static str,
    pub role: &'static str,
    pub unit_code: &'static str,
    pub display_name: &'static str,
}

pub const DEMO_PASSWORD: &str = "muster-demo";

pub const DEMO_LOGINS: &[DemoLogin] = &[
    DemoLogin {
        username: "admin",
        role: "admin",
        unit_code: PROVINCE_CODE,
        display_name: "系统管理员",
    },
    DemoLogin {
        username: "convener",
        role: "convener",
        unit_code: PROVINCE_CODE,
        display_name: "省应急管理厅调度员",
    },
    DemoLogin {
        username: "leader",
        role: "leader",
        unit_code: PROVINCE_CODE,
        display_name: "省应急管理厅领导",
    },
    DemoLogin {
        username: "tangshan",
        role: "bureau",
        unit_code: "130200",
        display_name: "唐山市应急管理局",
    },
    DemoLogin {
        username: "baoding",
        role: "bureau",
        unit_code: "130600",
        display_name: "保定市应急管理局",
    },
];

struct City {
    code: String,
    name: String,
    counties: Vec<String>,
}

fn cities() -> Vec<City> {
    let mut cities: Vec<City> = Vec::new();
    for line in DIVISIONS.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cells = line.split(',');
        let (code, name, county) = (
            cells.next().unwrap_or_default(),
            cells.next().unwrap_or_default(),
            cells.next().unwrap_or_default(),
        );
        let code = if code.is_empty() {
            EXTRA_CITY_CODES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c.to_string())
                .unwrap_or_else(|| panic!("no code for {name} in data/hebei-divisions.csv"))
        } else {
            code.to_string()
        };
        if cities.last().is_none_or(|c| c.code != code) {
            cities.push(City {
                code,
                name: name.to_string(),
                counties: Vec::new(),
            });
        }
        if !county.is_empty() {
            cities
                .last_mut()
                .expect("pushed above")
                .counties
                .push(county.to_string());
        }
    }
    cities
}

fn person_name(rng: &mut StdRng) -> String {
    let mut name = String::new();
    name.push(SURNAMES[rng.gen_range(0..SURNAMES.len())]);
    for _ in 0..rng.gen_range(1..=2) {
        name.push(GIVEN[rng.gen_range(0..GIVEN.len())]);
    }
    name
}

/// People of one unit, one per role, with distinct names (people are keyed by unit and name).
fn unit_people(
    rng: &mut StdRng,
    unit_code: &str,
    roles: [PersonRole; 3],
    people: &mut Vec<PersonRecord>,
) {
    let mut names: Vec<String> = Vec::new();
    for role in roles {
        let mut name = person_name(rng);
        while names.contains(&name) {
            name = person_name(rng);
        }
        names.push(name.clone());
        people.push(person(rng, unit_code, role, name));
    }
}

fn person(rng: &mut StdRng, unit_code: &str, role: PersonRole, name: String) -> PersonRecord {
    PersonRecord {
        unit_code: unit_code.to_string(),
        name,
        roles: vec![role],
        email: Some(format!(
            "{role}.{}@demo.muster.example",
            unit_code.to_lowercase()
        )),
        mobile: Some(format!("13{:09}", rng.gen_range(0..1_000_000_000u64))),
    }
}

fn bureau_people(rng: &mut StdRng, code: &str, people: &mut Vec<PersonRecord>) {
    let roles = [
        PersonRole::Principal,
        PersonRole::Deputy,
        PersonRole::Supervisor,
    ];
    unit_people(rng, code, roles, people);
}

fn unit(code: String, name: String, level: Level, parent: Option<&UnitRecord>) -> UnitRecord {
    UnitRecord {
        path: child_path(parent.map(|p| p.path.as_str()), &code),
        parent_code: parent.map(|p| p.code.clone()),
        code,
        name,
        level,
        sectors: Vec::new(),
        mailbox: None,
    }
}

/// Generates the directory with `enterprises` enterprises, three people each, plus three
/// people in every government unit. Units come parents first.
pub fn generate(enterprises: usize) -> DemoDirectory {
    let mut rng = StdRng::seed_from_u64(20_200_217);
    let mut units = Vec::new();
    let mut people = Vec::new();
    let mut province = unit(PROVINCE_CODE.into(), "河北省".into(), Level::Province, None);
    province.mailbox = Some("yjt@demo.muster.example".into());
    bureau_people(&mut rng, PROVINCE_CODE, &mut people);
    units.push(province.clone());

    // (host index into `units`, city name, county name) for every place enterprises go.
    let mut hosts: Vec<(usize, String, String)> = Vec::new();
    for city in cities() {
        let mut city_unit = unit(
            city.code.clone(),
            city.name.clone(),
            Level::City,
            Some(&province),
        );
        city_unit.mailbox = Some(format!("yjj.{}@demo.muster.example", city.code));
        bureau_people(&mut rng, &city.code, &mut people);
        units.push(city_unit.clone());
        if city.counties.is_empty() {
            hosts.push((units.len() - 1, city.name.clone(), city.name.clone()));
        }
        for (i, county) in city.counties.iter().enumerate() {
            let code = format!("{}{:02}", &city.code[..4], i + 1);
            let mut district = unit(
                code.clone(),
                county.clone(),
                Level::District,
                Some(&city_unit),
            );
            district.mailbox = Some(format!("yjj.{code}@demo.muster.example"));
            bureau_people(&mut rng, &code, &mut people);
            units.push(district);
            hosts.push((units.len() - 1, city.name.clone(), county.clone()));
        }
    }

    for n in 0..enterprises {
        let (host_index, city, county) = &hosts[n % hosts.len()];
        let host = units[*host_index].clone();
        let roll = rng.gen_range(0..100);
        let sector = if COAL_CITIES.contains(&city.as_str()) && roll < 25 {
            Sector::CoalMine
        } else if roll < 45 {
            Sector::NonCoalMine
        } else {
            Sector::IndustryTrade
        };
        let word = FIRM_WORDS[rng.gen_range(0..FIRM_WORDS.len())];
        let suffix = match sector {
            Sector::CoalMine => "煤业有限公司",
            Sector::NonCoalMine => ["矿业有限公司", "石灰石矿", "铁矿"][rng.gen_range(0..3)],
            Sector::IndustryTrade => [
                "钢铁有限公司",
                "机械制造有限公司",
                "纺织有限公司",
                "食品有限公司",
                "建材有限公司",
            ][rng.gen_range(0..5)],
        };
        let place = county.trim_end_matches(['区', '县', '市']);
        let code = format!("{}E{:06}", host.code, n + 1);
        let name = format!("{place}{word}{suffix}");
        let mut enterprise = unit(code.clone(), name, Level::Enterprise, Some(&host));
        enterprise.sectors = vec![sector];
        let roles = [
            PersonRole::Principal,
            PersonRole::Deputy,
            PersonRole::SafetyHead,
        ];
        unit_people(&mut rng, &code, roles, &mut people);
        units.push(enterprise);
    }
    // Parents first, as an import would order them.
    units.sort_by_key(|u| u.level);
    DemoDirectory { units, people }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hebei_has_fourteen_city_level_units_and_deterministic_enterprises() {
        let demo = generate(300);
        let cities: Vec<&str> = demo
            .units
            .iter()
            .filter(|u| u.level == Level::City)
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(cities.len(), 14, "{cities:?}");
        assert!(cities.contains(&"雄安新区") && cities.contains(&"定州市"));
        let districts = demo
            .units
            .iter()
            .filter(|u| u.level == Level::District)
            .count();
        assert!(districts > 150, "{districts} districts");
        assert_eq!(
            demo.units
                .iter()
                .filter(|u| u.level == Level::Enterprise)
                .count(),
            300
        );
        for sector in Sector::ALL {
            assert!(
                demo.units.iter().any(|u| u.sectors.contains(sector)),
                "no {sector}"
            );
        }
        let again = generate(300);
        assert_eq!(demo.units, again.units);
        assert_eq!(demo.people, again.people);
        let codes: std::collections::HashSet<&str> =
            demo.units.iter().map(|u| u.code.as_str()).collect();
        assert_eq!(codes.len(), demo.units.len(), "codes are unique");
    }
}
